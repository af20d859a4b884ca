"""`python -m medidiff` (also `torchrun -m medidiff train ...`)."""

from medidiff.cli.main import main

raise SystemExit(main())
