"""How fast is `lmsupervisor status`? Other tools call it in loops, so it must stay cheap.

Starts a real `lmsupervisor run` against a simulated LM Studio (no models), waits until it
is ready, then prints the median, p90 and min wall time of N runs (default 50) of:
``python -c pass`` (the interpreter's floor), ``lmsupervisor status`` and
``lmsupervisor status --json``, and which heavy modules the status path imports
(typing, asyncio, structlog, h11, http.client, ssl). Figures are milliseconds.
The package's bytecode is compiled first, as an install does (with PYTHONDONTWRITEBYTECODE
set, every run would otherwise pay for compiling the client).

Usage: python bench/status_cli.py [--runs N]
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Supervised

from lmsupervisor.simulator.home import create_install

HEAVY = ("typing", "asyncio", "structlog", "h11", "http.client", "ssl", "email.parser")
PROBE = """
import sys
from lmsupervisor.cli import main
sys.argv = ["lmsupervisor", "status", "--socket", sys.argv[1]]
code = main()
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stderr.write("HEAVY " + ",".join(heavy) + " MODULES " + str(len(sys.modules)) + "\\n")
"""


def timed_runs(argv: list[str], runs: int) -> list[float]:
    """Wall time of ``runs`` runs of ``argv`` in milliseconds, after 3 warm-up runs."""
    out = []
    for i in range(runs + 3):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if i >= 3:
            out.append((time.perf_counter() - started) * 1000)
    return out


def show(label: str, runs: list[float]) -> None:
    ordered = sorted(runs)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    print(f"{label:32s} median {statistics.median(runs):6.1f} ms   p90 {p90:6.1f} ms   min {ordered[0]:6.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    import lmsupervisor

    compileall.compile_dir(Path(lmsupervisor.__file__).parent, quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="lmsb", dir="/tmp"))
    sim = create_install(tmp / "home", time_scale=0.02)
    config = '[health]\ninterval = 1\n[log]\nlevel = "warning"\n'
    with Supervised(sim, tmp, config, sock=tmp / "run" / "s.sock") as run:
        sock = run.sock
        script = shutil.which("lmsupervisor", path=str(Path(sys.executable).parent)) or "lmsupervisor"
        print(f"{args.runs} runs each, after 3 warm-up runs; socket {sock}")
        show("python -c pass", timed_runs([sys.executable, "-c", "pass"], args.runs))
        show("lmsupervisor status", timed_runs([script, "status", "--socket", str(sock)], args.runs))
        show("lmsupervisor status --json", timed_runs([script, "status", "--json", "--socket", str(sock)], args.runs))
        probe = subprocess.run(
            [sys.executable, "-c", PROBE.format(heavy=HEAVY), str(sock)],
            capture_output=True,
            text=True,
            check=False,
        )
        line = next((x for x in probe.stderr.splitlines() if x.startswith("HEAVY")), probe.stderr.strip())
        print(f"heavy modules imported by `status`: {line.split()[1] if len(line.split()) > 3 else '(none)'}")
        print(f"modules loaded in all: {line.split()[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
