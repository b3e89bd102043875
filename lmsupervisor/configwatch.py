"""Watching the config file: ``reload`` when it changes, and no wakeup while it does not.

On Linux, inotify on the file's folder, read by the event loop itself (asyncinotify: the
inotify descriptor is one more reader of the loop): no thread, nothing runs until the
kernel reports a change, and a change is seen at once. Elsewhere, watchfiles (FSEvents,
ReadDirectoryChangesW), whose bridge thread wakes every :data:`STEP_MS` to look for changes
(a change is reported within one to two steps).

A burst of changes (an editor's save: create, write, rename into place) posts one
``reload``, :data:`DEBOUNCE` seconds after its first change.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from lmsupervisor.clock import Clock

DEBOUNCE = 0.2  # seconds from a burst's first change to the one reload it posts
STEP_MS = 1000  # watchfiles (not Linux): ms between its thread's looks for changes and for stopping


async def watch_config(
    path: Path,
    post: Callable[[], None],
    clock: Clock,
    platform: str = sys.platform,
    failed: Callable[[OSError], None] | None = None,
) -> None:
    """Call ``post()`` after each burst of changes to the file ``path`` (created, written,
    renamed in or out, deleted), until cancelled. ``platform`` is ``sys.platform``: inotify
    on ``linux``, watchfiles elsewhere. When ``path``'s folder cannot be watched (missing,
    no inotify watches left) the OSError goes to ``failed`` and the watch ends (without
    ``failed``, it is raised)."""
    changed = _Debounced(post, clock)
    try:
        if platform == "linux":
            await _inotify(path, changed)
        else:
            await _watchfiles(path, changed)
    except OSError as exc:
        if failed is None:
            raise
        failed(exc)
    finally:
        changed.cancel()


class _Debounced:
    """``post()`` :data:`DEBOUNCE` s of ``clock`` time after the first :meth:`change` of a
    burst; one timer while a change is pending, none otherwise."""

    def __init__(self, post: Callable[[], None], clock: Clock) -> None:
        self.post = post
        self.clock = clock
        self.pending: asyncio.Future[None] | None = None

    def change(self) -> None:
        if self.pending is None:
            self.pending = self.clock.timer(DEBOUNCE)
            self.pending.add_done_callback(self._due)

    def cancel(self) -> None:
        if self.pending is not None:
            self.pending.cancel()

    def _due(self, timer: asyncio.Future[None]) -> None:
        self.pending = None
        if not timer.cancelled():
            self.post()


async def _inotify(path: Path, changed: _Debounced) -> None:
    from asyncinotify import Inotify, Mask  # noqa: PLC0415 - Linux only

    mask = Mask.CREATE | Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE | Mask.ONLYDIR
    with Inotify() as inotify:
        inotify.add_watch(path.parent, mask)
        async for event in inotify:
            if event.name is not None and event.name.name == path.name:
                changed.change()


async def _watchfiles(path: Path, changed: _Debounced) -> None:
    import watchfiles  # noqa: PLC0415 - its Rust extension loads only for `run`

    # step: how often the watcher thread wakes (taking the GIL) to check for changes and for
    # stopping; the default 50 ms costs an idle supervisor more CPU than all of its probes
    # (bench/idle.py). rust_timeout: how often the thread hands back to the event loop with
    # nothing to report (default 5 s); stopping never waits for it (checked every step).
    batches = watchfiles.awatch(path.parent, debounce=200, step=STEP_MS, rust_timeout=60_000, recursive=False)
    async for changes in batches:
        if any(Path(p).name == path.name for _, p in changes):
            changed.change()
