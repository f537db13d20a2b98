"""`python -m clipcy` runs the clipctl command line."""

from clipcy.cli import main

raise SystemExit(main())
