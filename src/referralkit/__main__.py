"""``python -m referralkit``: the command line."""

from .cli import main

raise SystemExit(main())
