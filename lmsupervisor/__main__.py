"""`python -m lmsupervisor`: the same entry point as the `lmsupervisor` script."""

from lmsupervisor.cli import script

script()
