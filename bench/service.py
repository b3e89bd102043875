"""Service benchmark: the systemd user-unit scenario of tests/integration/test_systemd_user.py, N times.

Prints, per run and as medians: `systemctl --user start` to READY (cold: LM Studio down; and
adopting a running LM Studio), kill -9 of the supervisor to READY again (RestartSec included),
SIGSTOP to the watchdog's restart, and a "reboot" (manager start) to LM Studio ready with its
models. Times are systemd's own monotonic timestamps where it has them. Needs root: it creates
a throwaway user with its own systemd user manager, and removes everything afterwards.

Usage: python bench/service.py [--runs N]
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' harness lives in the repo

from tests.integration.test_systemd_user import scenario, setup_user
from tests.integration.usermanager import UserManager, build_wheel, service_venv, unavailable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"cannot run a systemd user manager here: {reason}")
        return 1
    folder = Path(tempfile.mkdtemp(prefix="lmsv-venv-", dir="/tmp"))
    folder.chmod(0o755)
    results: dict[str, list[float]] = {}
    try:
        cli = service_venv(folder / "venv", build_wheel(folder / "wheel"))
        for run in range(1, max(1, args.runs) + 1):
            um = UserManager(f"lmsv{secrets.token_hex(4)}")
            try:
                figures = scenario(um, setup_user(um, cli), cli)
            finally:
                um.destroy()
            print(f"run {run}:")
            for name, value in figures.items():
                print(f"  {name:60} {value:6.2f} s")
                results.setdefault(name, []).append(value)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.runs > 1:
        print(f"median of {args.runs} runs:")
        for name, values in results.items():
            print(f"  {name:60} {statistics.median(values):6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
