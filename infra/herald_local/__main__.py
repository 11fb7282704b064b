"""`PYTHONPATH=infra python -m herald_local ...` (see docs/local-stack.md)."""

import os
import sys

from .cli import main

code = main()
# Everything is stopped and reaped by now. Skip interpreter finalization: collecting the heap
# boto3's models leave behind takes most of a second, and test harnesses wait for our exit.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
