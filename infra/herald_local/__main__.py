"""`PYTHONPATH=infra python -m herald_local ...` (see docs/local-stack.md)."""

import sys

from .cli import main

sys.exit(main())
