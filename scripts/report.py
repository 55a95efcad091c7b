#!/usr/bin/env python
"""Thin wrapper: `scripts/report.py ARGS` is `python -m ablate.report ARGS`."""
import sys

from ablate.report import main

sys.exit(main())
