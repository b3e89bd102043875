"""Loaded by every Python started with this folder on ``PYTHONPATH``: shapes the interpreter
as Windows or macOS when ``LMSUPERVISOR_TEST_SHAPE`` says so (see ``shape_guard.py``), and
removes that variable so the processes it starts are ordinary."""

from __future__ import annotations

import os

_shape = os.environ.pop("LMSUPERVISOR_TEST_SHAPE", "")
if _shape:
    from tests.shapes import shape_guard

    shape_guard.install(_shape, os.environ.pop("LMSUPERVISOR_TEST_SHAPE_LOG", ""))
