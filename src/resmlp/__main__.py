"""`python -m resmlp ...` (what `torchrun -m resmlp train ...` runs)."""

import sys

from resmlp.cli import main

sys.exit(main())
