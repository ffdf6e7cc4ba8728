"""python -m pyfast.train: the pyfast-train command line (pyfast.train.cli)."""

import sys

from pyfast.train.cli import main

sys.exit(main())
