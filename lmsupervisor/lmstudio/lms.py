"""An async runner for the `lms` CLI: timeouts, process-group kill, JSON, error mapping.

Every call runs ``lms`` in a new session (its own process group) with stdin closed, waits
at most ``timeout`` seconds, and kills the whole group afterwards, so a hung `lms` (or a
helper it forked without detaching) cannot outlive the call. Daemons that `lms daemon up`
starts detach into their own session and are not touched.

Output handling follows facts §3: JSON, tables and ``lms status`` on stdout, logger
text on stderr (``Error: `` for errors), parsed by the pure functions of
:mod:`lmsupervisor.lmstudio.lmsoutput`. Failures map to the error tree
(:mod:`lmsupervisor.errors`): :class:`LmsNotFoundError`, :class:`LmsTimeoutError`,
:class:`LmsExitError` (with LM Studio's own message), :class:`LmsOutputError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lmsupervisor.core.hardware import Hardware, InstalledRuntime
from lmsupervisor.core.observed import DaemonStatus, DownloadedModel, LoadedModel, ServerStatus
from lmsupervisor.errors import (
    LmsExitError,
    LmsNotFoundError,
    LmsOutputError,
    LmsTimeoutError,
)
from lmsupervisor.lmstudio.lmsoutput import (
    DAEMON_NOT_RUNNING,
    error_line,
    no_such_command,
    parse_daemon_status,
    parse_json,
    parse_ls,
    parse_ps,
    parse_server_status,
)
from lmsupervisor.lmstudio.survey import parse_runtime_ls, parse_survey
from lmsupervisor.platform import current as this_os

DEFAULT_TIMEOUT = 30.0  # seconds; `server start` and loads pass longer ones


@dataclass(frozen=True)
class LmsResult:
    """One finished `lms` call. ``duration_ms`` is wall time in milliseconds."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_ms: float


class LmsRunner(Protocol):
    """What the supervisor needs of `lms` (a fake implements it in tests)."""

    async def run(self, *args: str, timeout: float | None = None) -> LmsResult:
        """Run ``lms *args`` within ``timeout`` seconds (None: the runner's default).

        Returns the result whatever the exit code; raises :class:`LmsNotFoundError` when
        there is no executable and :class:`LmsTimeoutError` when time runs out.
        """


# Facts §9: `LMS_SERVER_HOST` would set `server start`'s bind (ours is `--bind`);
# `LMS_API_SERVER_INFO_PATH` turns off both discovery's port scan and the wake-up, so
# `daemon up`/`server start` would never start LM Studio.
STRIPPED_ENV = ("LMS_SERVER_HOST", "LMS_API_SERVER_INFO_PATH")
# Commander colours help and tables under FORCE_COLOR even on a pipe (facts §9).
NO_COLOUR_ENV = {"NO_COLOR": "1", "FORCE_COLOR": "0"}


class Lms:
    """Runs `lms` at ``path`` with ``env`` (default: this process's environment), minus
    :data:`STRIPPED_ENV` and with colours off (:data:`NO_COLOUR_ENV`), facts §9."""

    def __init__(
        self, path: Path, env: Mapping[str, str] | None = None, default_timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.path = path
        self.env = dict(os.environ if env is None else env)
        for name in STRIPPED_ENV:
            self.env.pop(name, None)
        self.env.update(NO_COLOUR_ENV)
        self.default_timeout = default_timeout

    async def run(self, *args: str, timeout: float | None = None) -> LmsResult:
        """Run ``lms *args``; never raises for a non-zero exit (see :meth:`check`).

        Raises :class:`LmsNotFoundError` if the executable is missing and
        :class:`LmsTimeoutError` after ``timeout`` seconds (the process group is killed).
        """
        timeout = self.default_timeout if timeout is None else timeout
        argv = (str(self.path), *args)
        started = time.monotonic()
        kwargs: dict[str, Any] = this_os().new_group_options()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                **kwargs,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise LmsNotFoundError(
                f"cannot run {self.path}: {exc.strerror}",
                list(argv),
                hint="set lmstudio.lms to LM Studio's lms, or run LM Studio once",
            ) from exc
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            _kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise LmsTimeoutError(
                f"`lms {' '.join(args)}` did not finish within {timeout:g} s",
                list(argv),
                timeout,
                hint="LM Studio may be hung; lmsupervisor escalates",
            ) from None
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            # Reap it before the cancellation goes on: an unreaped child's transport would be
            # closed by its finalizer after the loop, logging "Event loop is closed" (SIGTERM).
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(proc.wait(), 2.0)
            raise
        _kill_group(proc.pid)
        return LmsResult(
            tuple(argv),
            proc.returncode or 0,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
            (time.monotonic() - started) * 1000,
        )


def _exit_error(args: Sequence[str], result: LmsResult, line: str) -> LmsExitError:
    """The :class:`LmsExitError` for `lms <args>` that exited non-zero with LM Studio's ``line``."""
    return LmsExitError(
        f"`lms {' '.join(args)}` exited {result.returncode}: {line}",
        list(result.argv),
        result.returncode,
        result.stdout,
        result.stderr,
        line,
    )


def _kill_group(pgid: int) -> None:
    """Kill what is left of the call's process group (nothing, normally; see
    :meth:`~lmsupervisor.platform.base.OsPlatform.kill_group`)."""
    this_os().kill_group(pgid)


class LmsClient:
    """Typed `lms` commands over any :class:`LmsRunner`."""

    def __init__(self, runner: LmsRunner) -> None:
        self.runner = runner

    async def check(self, *args: str, timeout: float | None = None) -> LmsResult:
        """Run and raise :class:`LmsExitError` (with LM Studio's message) on a non-zero exit."""
        result = await self.runner.run(*args, timeout=timeout)
        if result.returncode != 0:
            raise _exit_error(args, result, error_line(result.stderr) or error_line(result.stdout) or "no message")
        return result

    async def _json(self, *args: str, timeout: float | None = None) -> Any:
        result = await self.check(*args, timeout=timeout)
        return parse_json(result.stdout, result.argv)

    async def ps(self, timeout: float | None = None) -> list[LoadedModel]:
        """This machine's loaded model instances, from `lms ps --json` (facts §3); ``[]``
        when none. Instances on LM Link devices (``deviceIdentifier`` set, facts §9) are
        left out: they are not loaded here.

        ``timeout`` is seconds (None: the runner's default). Raises :class:`LmsExitError`
        on a non-zero exit and :class:`LmsOutputError` when the output is not a JSON array
        of objects with ``identifier`` and ``modelKey``.
        """
        return [m for m in parse_ps(await self._json("ps", "--json", timeout=timeout)) if m.device is None]

    async def ls(self, timeout: float | None = None) -> list[DownloadedModel]:
        """The downloaded models, from `lms ls --json` (facts §3, ``ModelInfo[]``), those of
        LM Link devices included with their ``device`` (facts §9).

        ``timeout`` is seconds (None: the runner's default). Raises :class:`LmsExitError`
        on a non-zero exit and :class:`LmsOutputError` when the output is not a JSON array
        of objects with ``modelKey``.
        """
        return parse_ls(await self._json("ls", "--json", timeout=timeout))

    async def daemon_status(self, timeout: float | None = None) -> DaemonStatus:
        """`lms daemon status --json`; ``supported=False`` on an `lms` without `daemon`."""
        result = await self.runner.run("daemon", "status", "--json", timeout=timeout)
        if result.returncode != 0:
            if no_such_command(result.stderr):
                return DaemonStatus(running=False, supported=False)
            raise _exit_error(("daemon", "status", "--json"), result, error_line(result.stderr) or "no message")
        return parse_daemon_status(parse_json(result.stdout, result.argv), result.argv)

    async def daemon_up(self, timeout: float | None = None) -> DaemonStatus:
        """Start llmster, or find the daemon or app that already runs: `lms daemon up --json` (facts §3).

        Returns ``{"status":"running","pid","isDaemon"}`` as a :class:`DaemonStatus`.
        ``timeout`` is seconds (None: the runner's default). Raises :class:`LmsExitError`
        when `lms` exits 1 (discovery failed) and :class:`LmsOutputError` on other output.
        """
        data = await self._json("daemon", "up", "--json", timeout=timeout)
        return parse_daemon_status(data, ("lms", "daemon", "up", "--json"))

    async def daemon_down(self, timeout: float | None = None) -> bool:
        """Stop llmster with `lms daemon down` (facts §3); ``timeout`` is seconds. True when
        it stopped one; False when none ran (exit 1, ``Daemon is not running.``, facts §9).

        Raises :class:`LmsExitError` on any other exit 1, such as the GUI app holding the
        service (`daemon down` does not stop the app, facts §8). It returns before the
        process has exited.
        """
        result = await self.runner.run("daemon", "down", timeout=timeout)
        if result.returncode == 0:
            return True
        if DAEMON_NOT_RUNNING in result.stderr or DAEMON_NOT_RUNNING in result.stdout:
            return False
        raise _exit_error(
            ("daemon", "down"), result, error_line(result.stderr) or error_line(result.stdout) or "no message"
        )

    async def server_status(self, timeout: float | None = None) -> ServerStatus:
        """Whether the HTTP server runs, and on which port: `lms server status --json` (facts §3).

        The command always exits 0, so only its JSON counts. ``timeout`` is seconds (None:
        the runner's default). Raises :class:`LmsExitError` on a non-zero exit anyway and
        :class:`LmsOutputError` when the JSON has no boolean ``running``.
        """
        data = await self._json("server", "status", "--json", timeout=timeout)
        return parse_server_status(data, ("lms", "server", "status", "--json"))

    async def server_start(self, port: int, bind: str | None, cors: bool, timeout: float | None = None) -> None:
        """`lms server start --port <port> [--bind <bind>] [--cors]` (facts §3).

        Every setting is passed explicitly because a plain `server start` resets CORS and
        the bind address (BT#1334); ``bind`` None leaves ``--bind`` out, for an `lms` that
        rejects it (before late 2025-11, facts §8: the saved interface is then kept). `lms`
        itself verifies the server (up to 5 tries, 1 s apart) before it exits; its verdict
        is wrong for 0.0.0.0 (BT#1720), so callers probe. ``timeout`` is seconds (None: the
        runner's default). Raises :class:`LmsExitError` on exit 1.
        """
        args = ["server", "start", "--port", str(port)]
        if bind is not None:
            args += ["--bind", bind]
        if cors:
            args.append("--cors")
        await self.check(*args, timeout=timeout)

    async def server_stop(self, timeout: float | None = None) -> bool:
        """Stop the server; False if it was not running (exit 1, "The server is not running.")."""
        result = await self.runner.run("server", "stop", timeout=timeout)
        if result.returncode == 0:
            return True
        if "not running" in result.stderr:
            return False
        raise _exit_error(("server", "stop"), result, error_line(result.stderr) or "no message")

    async def load(
        self,
        path: str,
        *,
        identifier: str | None = None,
        context_length: int | None = None,
        gpu: str | float | None = None,
        ttl: float | None = None,
        local: bool = False,
        timeout: float | None = None,
    ) -> None:
        """`lms load <path> --exact --yes [...]`: never prompts, never fuzzy-matches.
        ``local`` adds ``--local`` (LM Link builds, 2026-02+: never a remote device's model)."""
        args = ["load", path, "--exact", "--yes"]
        if local:
            args.append("--local")
        if identifier:
            args += ["--identifier", identifier]
        if context_length:
            args += ["--context-length", str(context_length)]
        if gpu is not None:
            args += ["--gpu", gpu if isinstance(gpu, str) else f"{gpu:g}"]
        if ttl:
            args += ["--ttl", str(max(1, round(ttl)))]
        await self.check(*args, timeout=timeout)

    async def unload(self, identifier: str, timeout: float | None = None) -> None:
        """Unload one instance with `lms unload <identifier>` (facts §3); ``timeout`` is seconds.

        An unknown identifier is *not* an error: `lms` prints "Model Not Found" and exits 0,
        so callers verify with :meth:`ps`. Raises :class:`LmsExitError` on a non-zero exit.
        """
        await self.check("unload", identifier, timeout=timeout)

    async def get(self, key: str, timeout: float | None = None) -> None:
        """Download a model with `lms get <key> --yes` (facts §3); no prompt, a no-op when present.

        ``timeout`` is seconds (None: the runner's default; a download needs a long one).
        Raises :class:`LmsExitError` on exit 1.
        """
        await self.check("get", key, "--yes", timeout=timeout)

    async def version(self, timeout: float | None = None) -> str:
        """`lms version --json` -> ``{"version": "<commit>"}`` (a semver on 0.3.x)."""
        data = await self._json("version", "--json", timeout=timeout)
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            raise LmsOutputError(
                f'`lms version --json`: expected {{"version": str}}, got {data!r}', ["lms", "version", "--json"]
            )
        return str(data["version"])

    async def runtime_survey(self, refresh: bool = False, timeout: float | None = None) -> Hardware:
        """LM Studio's hardware survey: `lms runtime survey --json [--refresh]` (facts §9,
        [lms] 2025-12-18+; parsed by :func:`~lmsupervisor.lmstudio.survey.parse_survey`,
        either schema). Without ``refresh`` the daemon answers from the survey it made when
        it started; with it, it surveys its selected runtimes again (a GPU that appeared
        since shows only then). ``surveyed_at`` is left None for the caller.

        ``timeout`` is seconds (None: the runner's default). Raises :class:`LmsExitError`
        on a non-zero exit (a CLI without the command: ``unknown command 'survey'``) and
        :class:`LmsOutputError` when the JSON lacks a field the supervisor reads.
        """
        args = ("runtime", "survey", "--json", *(("--refresh",) if refresh else ()))
        result = await self.check(*args, timeout=timeout)
        return parse_survey(result.stdout, result.argv)

    async def runtime_ls(self, timeout: float | None = None) -> list[InstalledRuntime]:
        """The installed inference runtimes and which are selected: `lms runtime ls` (facts
        §9, [lms] 2025-09-23+; :func:`~lmsupervisor.lmstudio.survey.parse_runtime_ls`).

        ``timeout`` is seconds (None: the runner's default). Raises :class:`LmsExitError`
        on a non-zero exit and :class:`LmsOutputError` on a table it cannot read.
        """
        result = await self.check("runtime", "ls", timeout=timeout)
        return parse_runtime_ls(result.stdout, result.argv)

    async def runtime_select(self, name: str, timeout: float | None = None) -> None:
        """Select the runtime ``name`` (``name`` or ``name@version``, as `lms runtime ls`
        shows it) for every model format it runs: `lms runtime select <name>` (facts §9).
        Selecting the one already selected is a no-op (``Already selected ...``).

        ``timeout`` is seconds (None: the runner's default). Raises :class:`LmsExitError`
        when `lms` exits 1: no installed runtime matches, or several do (a name without
        its version), with LM Studio's words.
        """
        await self.check("runtime", "select", name, timeout=timeout)
