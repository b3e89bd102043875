"""``python -m lmsupervisor.simulator.lms_cli``: one `lms` command."""

import sys

from lmsupervisor.simulator.lms_cli import main

sys.exit(main())
