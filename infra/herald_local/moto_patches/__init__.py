"""The changes the local stack makes to moto, one module each, applied by `apply()`.

moto is the stack's AWS back-end for SQS, STS, the Scheduler and S3, and for DynamoDB tables when
`--dynamodb moto` is asked for (or a table has a stream, which dynalite does not serve). Each
module says what it changes, why (a behaviour DynamoDB or SQS has and moto lacks, or a cost that
is moto's and not AWS's), and which test shows it (infra/tests/test_moto_patches.py, and the
back-end tests in test_dynamodb_backends.py). They assign to moto's internals, so they are
checked against one moto version: `check_version()` refuses any other (infra/requirements.txt
and infra/pyproject.toml pin it exactly). To move to a new moto, change TESTED_MOTO and the pins
together and run those tests.
"""

from __future__ import annotations

from importlib import metadata

from . import (dynamodb_atomic, dynamodb_capacity, dynamodb_partition_query, dynamodb_plain_json,
               method_names, module_list, sqs_clock, sqs_delete_lock, sqs_retention)

TESTED_MOTO = "5.2.5"

# In this order: the DynamoDB wrappers nest (the plain JSON answer innermost, then the capacity
# meter, the lock outermost, so that a write's sizes before and after are of one write).
PATCHES = (dynamodb_plain_json, dynamodb_capacity, dynamodb_atomic, dynamodb_partition_query,
           sqs_retention, sqs_delete_lock, sqs_clock, module_list, method_names)


class UntestedMoto(RuntimeError):
    pass


def check_version(installed: str | None = None) -> None:
    """Refuse a moto these patches were not tested on."""
    installed = installed or metadata.version("moto")
    if installed != TESTED_MOTO:
        raise UntestedMoto(
            f"moto {installed} is installed, but the local stack's patches to moto "
            f"(herald_local/moto_patches) are tested on moto {TESTED_MOTO} only: install "
            f"moto[server]=={TESTED_MOTO} (make venv does), or move TESTED_MOTO and the pins "
            "together after running infra/tests/test_moto_patches.py")


def apply() -> None:
    check_version()
    for patch in PATCHES:
        patch.apply()
