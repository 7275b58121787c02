"""python -m vdtrack.batch: the vdtrack-batch command (see vdtrack/batch/cli.py)."""
import sys

from .cli import main

sys.exit(main())
