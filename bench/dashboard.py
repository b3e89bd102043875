"""Dashboard figures: the page's size over the wire, its time to first paint with the
supervisor idle, and the supervisor's idle CPU with one page open versus none.

Starts the real ``lmsupervisor run`` (2 declared models, the simulator, the default 5 s
probe interval) and Debian's Chromium through Playwright (``--chromium``, default
/usr/bin/chromium), then:

- loads the page ``--loads`` times, each in a fresh browser context (no cache, the token
  exchanged again): bytes over the wire (``transferSize`` of the document, app.js and
  app.css from the Resource Timing API; gzip-encoded) and the decoded size; first paint and
  first contentful paint (Paint Timing), and the time until the live data shows ``ready``
  (ms from navigation start, as ``performance.now()`` reads it);
- measures the supervisor's own CPU (bench/idle.py's ``own_cpu``: on-CPU nanoseconds of its
  threads) over ``--seconds`` with no page open, then over as long with one page open.

Usage: python bench/dashboard.py [--seconds 60] [--loads 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from harness import Supervised
from idle import models_toml, own_cpu

from lmsupervisor.client.sync import request
from lmsupervisor.dashboard.tokenfile import dashboard_url
from lmsupervisor.simulator.home import create_install

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOAD_FIGURES = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const files = performance.getEntriesByType("resource").filter((r) => !r.name.endsWith("/events"));
  const paint = Object.fromEntries(performance.getEntriesByType("paint").map((p) => [p.name, p.startTime]));
  return {
    wire: nav.transferSize + files.reduce((n, r) => n + r.transferSize, 0),
    decoded: nav.decodedBodySize + files.reduce((n, r) => n + r.decodedBodySize, 0),
    files: files.length + 1,
    first_paint: paint["first-paint"], first_contentful_paint: paint["first-contentful-paint"],
  };
}"""


def page_figures(browser: Any, url: str) -> dict[str, float]:
    """One load in a fresh context: the sizes and paint times above, and ``ready_ms``."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("document.getElementById('state').textContent === 'ready'", timeout=30_000)
    ready_ms = float(page.evaluate("performance.now()"))
    figures: dict[str, float] = {**page.evaluate(LOAD_FIGURES), "ready_ms": ready_ms}
    context.close()
    return figures


def cpu_percent(pid: int, seconds: float) -> float:
    """The supervisor's own CPU over ``seconds``, in % of one core."""
    me = psutil.Process(pid)
    before, started = own_cpu(me), time.monotonic()
    time.sleep(seconds)
    return 100 * (own_cpu(me) - before) / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0, help="CPU measured over this long, each way")
    parser.add_argument("--loads", type=int, default=5, help="page loads for the size and paint figures")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--scale", type=float, default=0.05, help="simulator time_scale (bring-up only)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="lmsd", dir="/tmp"))
    sim = create_install(tmp / "home", time_scale=args.scale)
    config = '[log]\nlevel = "warning"\n' + models_toml(2)
    with Supervised(sim, tmp, config) as run, sync_playwright() as p:
        url = dashboard_url(run.sock)
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS, headless=True)
        loads = [page_figures(browser, url) for _ in range(args.loads)]
        time.sleep(6)  # the pages' connections are gone; the first health rounds passed
        none = cpu_percent(run.pid, args.seconds)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.getElementById('state').textContent === 'ready'", timeout=30_000)
        one = cpu_percent(run.pid, args.seconds)
        still = request(run.sock, "GET", "/v1/status")[1]
        browser.close()
    if still["state"] != "ready":
        raise SystemExit(f"the supervisor left ready during the measurement: {still['state']}")

    def med(key: str) -> float:
        return statistics.median(f[key] for f in loads)

    print(f"dashboard page, {args.loads} loads in fresh contexts (Chromium headless, loopback):")
    print(
        f"  over the wire      {med('wire') / 1024:.1f} KiB in {med('files'):.0f} files "
        f"(decoded {med('decoded') / 1024:.1f} KiB)"
    )
    print(f"  first paint        {med('first_paint'):.0f} ms (median; min {min(f['first_paint'] for f in loads):.0f})")
    print(f"  first contentful   {med('first_contentful_paint'):.0f} ms")
    print(f"  live data shown    {med('ready_ms'):.0f} ms (state 'ready' from the event stream)")
    print(f"supervisor idle CPU over {args.seconds:g} s each (2 models, health.interval 5 s):")
    print(f"  no page open       {none:.3f} % of one core")
    print(f"  one page open      {one:.3f} % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
