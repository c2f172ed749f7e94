"""`python -m gsgan_core.train ...` and `torchrun --nproc_per_node N -m gsgan_core.train ...`."""

import sys

from gsgan_core.cli import train_main

sys.exit(train_main())
