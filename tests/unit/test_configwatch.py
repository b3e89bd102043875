"""The config file watch: a burst of changes posts one reload, nothing else does, and an idle
watch holds no timer (inotify on Linux, watchfiles elsewhere)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from lmsupervisor.configwatch import DEBOUNCE, watch_config
from tests.scenarios.fakes import FakeClock, settle

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="both branches run on Linux; inotify only there")


async def until_pending(clock: FakeClock, seconds: float = 10.0) -> None:
    """Wait (bounded) until the watch has seen a change: its debounce timer is on ``clock``.
    The kernel (or watchfiles' thread) reports the change on its own time, so this polls."""
    async with asyncio.timeout(seconds):
        while clock.next_deadline() is None:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("platform", ["linux", "darwin"])
async def test_a_burst_of_changes_posts_one_reload(tmp_path: Path, platform: str) -> None:
    """An editor's save (write, write again, rename into place) posts one reload, DEBOUNCE s
    after the first change; a change to another file in the folder posts nothing and arms no
    timer. On Linux (inotify read by the loop) the idle watch has no timer at all."""
    config = tmp_path / "c.toml"
    config.write_text("[log]\n")
    clock, posted = FakeClock(), []
    watch = asyncio.create_task(watch_config(config, lambda: posted.append(1), clock, platform=platform))
    try:
        await settle()
        assert clock.next_deadline() is None
        (tmp_path / "other.toml").write_text("x")
        if platform == "linux":  # the loop reads inotify's events itself: they are there after one look
            await asyncio.sleep(0.2)
            assert (clock.next_deadline(), posted) == (None, [])
        config.write_text('[log]\nlevel = "debug"\n')
        config.write_text('[log]\nlevel = "info"\n')
        (tmp_path / "new.toml").write_text('[log]\nlevel = "warning"\n')
        os.replace(tmp_path / "new.toml", config)
        await until_pending(clock)
        await clock.advance(DEBOUNCE / 2)
        assert posted == []
        await clock.advance(DEBOUNCE)
        assert posted == [1]
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_a_change_pending_when_the_watch_stops_posts_nothing(tmp_path: Path) -> None:
    """Stopping the watch (shutdown) drops a reload not yet posted: nothing comes after the stop."""
    config = tmp_path / "c.toml"
    config.write_text("[log]\n")
    clock, posted = FakeClock(), []
    watch = asyncio.create_task(watch_config(config, lambda: posted.append(1), clock, platform="linux"))
    await settle()
    config.write_text('[log]\nlevel = "debug"\n')
    await until_pending(clock)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    await clock.advance(DEBOUNCE * 2)
    assert posted == []


@pytest.mark.parametrize("platform", ["linux", "darwin"])
async def test_a_folder_that_cannot_be_watched_is_handed_to_failed(tmp_path: Path, platform: str) -> None:
    """When the watch cannot start (here the folder is gone; in the field, no inotify watches
    left), the OSError goes to ``failed`` (run.py makes it the problem config_watch_failed)
    and the watch ends; without ``failed`` it is raised."""
    config = tmp_path / "gone" / "c.toml"
    errors: list[OSError] = []
    async with asyncio.timeout(10):
        await watch_config(config, lambda: None, FakeClock(), platform=platform, failed=errors.append)
        assert [type(e).__name__ for e in errors] == ["FileNotFoundError"]
        with pytest.raises(FileNotFoundError):
            await watch_config(config, lambda: None, FakeClock(), platform=platform)
