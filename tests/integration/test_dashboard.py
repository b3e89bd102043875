"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real
`lmsupervisor run` and the simulator. Screenshots go to each test's temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_run import BASE_CONFIG, TWO_MODELS, Running

CHROMIUM = os.environ.get("LMSUPERVISOR_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"no Chromium at {CHROMIUM}: install it (`apt-get install chromium`, as .ci/run does as root) "
        "or point LMSUPERVISOR_CHROMIUM at one",
    ),
    pytest.mark.timeout(120),
]
# a crash waits 1.5 s before the bring-up: long enough to see `backoff` on the page
SLOW_BACKOFF = BASE_CONFIG.replace("initial_delay = 0.1\nmax_delay = 1\n", "initial_delay = 1.5\nmax_delay = 2\n")
Page = Any


def dashboard_url(run: Running) -> str:
    """What `lmsupervisor dashboard --no-browser` prints: the URL with its token."""
    done = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "dashboard", "--no-browser", "--socket", str(run.sock)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=run.sim.env(),
    )
    assert done.returncode == 0, done
    return done.stdout.strip()


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def ready(sim: SimInstall, start: Callable[..., Running]) -> tuple[Running, str]:
    """A supervisor ready with two models, and its dashboard URL with the token."""
    run = start(sim, TWO_MODELS, base=SLOW_BACKOFF)
    run.wait_state("ready")
    return run, dashboard_url(run)


def open_page(browser: Any, url: str, width: int = 1280, height: int = 900) -> Page:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    playwright_api.expect(page.locator("#state")).to_have_text("ready", timeout=20_000)
    return page


def test_the_page_without_its_token_is_refused(ready: tuple[Running, str], browser: Any, tmp_path: Path) -> None:
    """No token, a wrong token, no cookie: 403, and the page says where the link comes from."""
    _, url = ready
    base = url.split("?")[0]
    page = browser.new_page()
    for where in (base, base + "?token=not-this-one", base + "app.js", base + "events"):
        answer = page.goto(where)
        assert (where, answer.status) == (where, 403)
    assert "lmsupervisor dashboard" in page.content()
    page.screenshot(path=str(tmp_path / "refused.png"))


def test_with_its_token_it_shows_ready_and_the_models(ready: tuple[Running, str], browser: Any, tmp_path: Path) -> None:
    """The token becomes an HttpOnly SameSite=Strict cookie, the URL is cleaned, the page shows
    ``ready``, both models loaded, the daemon's PID."""
    run, url = ready
    page = open_page(browser, url)
    assert page.url == url.split("?")[0]
    [cookie] = page.context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], "token" in page.url) == (True, "Strict", False)
    models = page.locator("#models .model")
    playwright_api.expect(models).to_have_count(2)
    assert [models.nth(i).get_attribute("data-model") for i in range(2)] == ["openai/gpt-oss-20b", "qwen"]
    playwright_api.expect(models.locator(".badge")).to_have_text(["loaded", "loaded"])
    playwright_api.expect(page.locator("#facts")).to_contain_text(str(run.sim.daemon_pid()))
    page.screenshot(path=str(tmp_path / "ready.png"), full_page=True)


def test_a_crash_shows_backoff_then_ready_without_a_reload(
    ready: tuple[Running, str], browser: Any, tmp_path: Path
) -> None:
    """kill -9 of LM Studio's daemon: the open page turns ``backoff``, then ``ready`` again,
    from the event stream (the same document: no reload), and the timeline shows the restart."""
    run, url = ready
    page = open_page(browser, url)
    page.evaluate("window.sameDocument = true")
    run.sim.crash_daemon()
    playwright_api.expect(page.locator("#state")).to_have_text("backoff", timeout=20_000)
    page.screenshot(path=str(tmp_path / "backoff.png"))
    playwright_api.expect(page.locator("#state")).to_have_text("ready", timeout=30_000)
    assert page.evaluate("window.sameDocument") is True
    playwright_api.expect(page.locator("#restarts li")).to_have_count(1)
    playwright_api.expect(page.locator("#timeline svg rect")).to_have_count(2)  # the background and one restart
    page.screenshot(path=str(tmp_path / "back.png"), full_page=True)


def test_restart_server_asks_first_then_restarts(ready: tuple[Running, str], browser: Any, tmp_path: Path) -> None:
    """Dismissed, the confirmation restarts nothing; accepted, LM Studio's server restarts
    (the restart count grows, on the page too)."""
    run, url = ready
    page = open_page(browser, url)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#restart-server")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#restart-server")
    playwright_api.expect(page.locator("#answer")).to_have_text("Restart LM Studio's server: requested")
    snap = run.wait_for(lambda s: s["restarts"]["count"] >= 1 and s["state"] == "ready")
    assert (snap["restarts"]["count"], snap["restarts"]["last_reason"]) == (1, "restart requested on the dashboard")
    playwright_api.expect(page.locator("#restart-count")).to_have_text("(1 in all)", timeout=20_000)
    page.screenshot(path=str(tmp_path / "restarted.png"))


def post(url: str, cookie: str | None, origin: str | None) -> int:
    request = urllib.request.Request(url, method="POST", data=b"")
    if cookie is not None:
        request.add_header("Cookie", cookie)
    if origin is not None:
        request.add_header("Origin", origin)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_post_from_another_origin_is_refused(ready: tuple[Running, str], browser: Any) -> None:
    """With the cookie but another ``Origin`` (or none), restart and reload are refused (403)
    and nothing restarts; from the page's own origin the same request is accepted."""
    run, url = ready
    page = open_page(browser, url)
    [cookie] = page.context.cookies()
    jar = f"{cookie['name']}={cookie['value']}"
    base = url.split("?")[0].rstrip("/")
    assert post(base + "/api/restart", jar, "http://evil.example") == 403
    assert post(base + "/api/reload", jar, "null") == 403
    assert post(base + "/api/restart?daemon=1", jar, None) == 403
    assert post(base + "/api/restart", None, base) == 403  # the right origin, no cookie
    # a page on another loopback origin cannot make the browser do it either (SameSite=Strict, Origin)
    other = browser.new_page()
    other.goto("data:text/html,<p>elsewhere</p>")
    status = other.evaluate(
        "url => fetch(url, {method: 'POST', credentials: 'include', mode: 'no-cors'})"
        ".then(r => r.type).catch(e => 'failed: ' + e)",
        base + "/api/restart",
    )
    assert status in ("opaque", "failed: TypeError: Failed to fetch")
    snap = run.status()
    assert snap is not None and snap["restarts"]["count"] == 0, json.dumps(snap)[:500]
    assert post(base + "/api/reload", jar, base) == 202


def test_a_phone_width_screen_has_no_horizontal_scroll(
    ready: tuple[Running, str], browser: Any, tmp_path: Path
) -> None:
    """At 375 px wide (a phone) everything wraps: nothing is wider than the screen."""
    _, url = ready
    page = open_page(browser, url, width=375, height=740)
    playwright_api.expect(page.locator("#models .model")).to_have_count(2)
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert widths[0] <= widths[1], widths
