"""`python -m ablate.report`: see ablate.report.cli.main."""
import sys

from ablate.report.cli import main

sys.exit(main())
