"""`python -m mrhash`: the command line (app/cli.py)."""

from mrhash.app.cli import main

raise SystemExit(main())
