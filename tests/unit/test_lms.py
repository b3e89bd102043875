"""The lms runner: timeouts kill the process group, output parsing, error mapping."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lmsupervisor.errors import LmsExitError, LmsNotFoundError, LmsOutputError, LmsTimeoutError
from lmsupervisor.lmstudio.lms import Lms, LmsClient
from lmsupervisor.lmstudio.lmsoutput import error_line, parse_daemon_status, parse_ls, parse_ps
from lmsupervisor.pids import pid_alive
from tests.conftest import eventually

NO_COLOUR = {"NO_COLOR": "1", "FORCE_COLOR": "0"}


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "lms"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """A hung lms and the child it forked are both killed when the timeout expires."""
    pidfile = tmp_path / "child.pid"
    # The child does not hold our pipes, so only the group kill can end it early.
    lms = script(tmp_path, f"sleep 30 >/dev/null 2>&1 &\necho $! > {pidfile}\nwait\n")
    with pytest.raises(LmsTimeoutError) as info:
        await Lms(lms).run("ps", timeout=0.5)
    assert info.value.timeout == 0.5
    child = int(pidfile.read_text())
    assert eventually(lambda: not pid_alive(child), timeout=2)


async def test_missing_executable(tmp_path: Path) -> None:
    """A path that is not there raises LmsNotFoundError with a hint."""
    with pytest.raises(LmsNotFoundError) as info:
        await Lms(tmp_path / "nope").run("ps")
    assert "lmstudio.lms" in info.value.hint


async def test_exit_error_carries_lmstudio_message(tmp_path: Path) -> None:
    """A non-zero exit becomes LmsExitError whose error_line is LM Studio's text."""
    lms = script(
        tmp_path,
        "echo 'Error: Failed to load model \"x\".' >&2\n"
        "echo 'Model loading was stopped due to insufficient system resources.' >&2\nexit 1\n",
    )
    with pytest.raises(LmsExitError) as info:
        await LmsClient(Lms(lms)).load("x")
    assert (info.value.returncode, info.value.error_line) == (
        1,
        'Failed to load model "x". Model loading was stopped due to insufficient system resources.',
    )


async def test_garbage_output(tmp_path: Path) -> None:
    """lms printing something that is not JSON is an LmsOutputError, not a crash."""
    lms = script(tmp_path, "echo 'Segmentation fault (core dumped)'\n")
    with pytest.raises(LmsOutputError):
        await LmsClient(Lms(lms)).ps()


async def test_legacy_lms_without_daemon(tmp_path: Path) -> None:
    """`error: unknown command 'daemon'` means a 0.3 lms: supported=False, no exception."""
    lms = script(tmp_path, "echo \"error: unknown command 'daemon'\" >&2\nexit 1\n")
    status = await LmsClient(Lms(lms)).daemon_status()
    assert (status.supported, status.running) == (False, False)


async def test_server_status_json_with_old_stderr_text(tmp_path: Path) -> None:
    """Before lms#461, `server status --json` also wrote text on stderr: only stdout counts."""
    lms = script(tmp_path, "echo 'The server is running on port 1234.' >&2\necho '{\"running\":true,\"port\":1234}'\n")
    status = await LmsClient(Lms(lms)).server_status()
    assert (status.running, status.port) == (True, 1234)


async def test_server_stop_not_running_is_false(tmp_path: Path) -> None:
    """`server stop` exit 1 with "The server is not running." is False, not an error."""
    lms = script(tmp_path, "echo 'The server is not running.' >&2\nexit 1\n")
    assert await LmsClient(Lms(lms)).server_stop() is False


async def test_daemon_down_not_running_is_false(tmp_path: Path) -> None:
    """`daemon down` exit 1 with "Daemon is not running." (facts §9) is False, not an error;
    a stopped daemon is True."""
    idle = script(tmp_path, "echo 'Daemon is not running.' >&2\nexit 1\n")
    assert await LmsClient(Lms(idle)).daemon_down() is False
    done = script(tmp_path, "echo 'Shutting down llmster...' >&2\necho 'Done.' >&2\n")
    assert await LmsClient(Lms(done)).daemon_down() is True


async def test_daemon_down_refused_by_the_app_raises(tmp_path: Path) -> None:
    """The GUI app holding the service refuses `daemon down` (facts §8): an error with its words."""
    said = "The daemon is currently running as part of LM Studio. Please exit LM Studio..."
    lms = script(tmp_path, f"echo '{said}' >&2\nexit 1\n")
    with pytest.raises(LmsExitError, match="running as part of LM Studio"):
        await LmsClient(Lms(lms)).daemon_down()


async def test_load_arguments(tmp_path: Path) -> None:
    """load always passes --exact --yes, then each declared option in lms's own syntax."""
    argfile = tmp_path / "args"
    lms = script(tmp_path, f'printf "%s\\n" "$@" > {argfile}\n')
    await LmsClient(Lms(lms)).load("a/b", identifier="x", context_length=8192, gpu=0.5, ttl=3600.0)
    assert argfile.read_text().split() == [
        "load",
        "a/b",
        "--exact",
        "--yes",
        "--identifier",
        "x",
        "--context-length",
        "8192",
        "--gpu",
        "0.5",
        "--ttl",
        "3600",
    ]


def test_parse_ps_rejects_wrong_shapes() -> None:
    """ps output must be an array of objects with string identifier and modelKey."""
    shapes: list[object] = [{"models": []}, [1], [{"identifier": 3, "modelKey": "a"}]]
    for bad in shapes:
        with pytest.raises(LmsOutputError):
            parse_ps(bad)
    [model] = parse_ps([{"identifier": "a:2", "modelKey": "a", "ttlMs": None, "contextLength": 4096}])
    assert (model.identifier, model.path, model.ttl_ms, model.context_length) == ("a:2", "a", None, 4096)


def test_error_line_without_prefix() -> None:
    """Without an Error: line, the whole stderr is the message, on one line."""
    assert error_line('Model not found\n\n    No model found with path being exactly "x".\n') == (
        'Model not found No model found with path being exactly "x".'
    )


def test_runner_uses_given_env(tmp_path: Path) -> None:
    """The runner passes its env (HOME points the simulated lms at its install), colours off."""
    runner = Lms(tmp_path / "lms", env={"HOME": "/x"})
    assert (runner.env, os.environ.get("HOME") != "/x") == ({"HOME": "/x", **NO_COLOUR}, True)


def test_error_line_keeps_the_cause_without_the_stack() -> None:
    """A load failure's SDK stack becomes the cause after the last `- Caused By:`, no frames, no ANSI."""
    stderr = (
        "\x1b[31mError: Channel Error\x1b[0m\n"
        "    at Object.<anonymous> (/snapshot/lms/dist/index.js:1:2)\n"
        "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)\n"
        "- Caused By: Error: Failed to load model\n"
        "    at lmstudio (/app/x.js:3:4)\n"
        "- Caused By: Error: Model loading was stopped due to insufficient system resources.\n"
        "    at y (/app/y.js:5:6)\n"
    )
    assert error_line(stderr) == "Model loading was stopped due to insufficient system resources."
    assert len(error_line("Error: " + "x" * 5000)) == 500


def test_lms_server_host_is_stripped(tmp_path: Path) -> None:
    """The supervisor decides the bind: LMS_SERVER_HOST never reaches `lms server start`."""
    runner = Lms(tmp_path / "lms", env={"HOME": "/x", "LMS_SERVER_HOST": "0.0.0.0"})
    assert runner.env == {"HOME": "/x", **NO_COLOUR}


async def test_lms_runs_without_colour_or_a_server_info_path(tmp_path: Path) -> None:
    """`lms` sees NO_COLOR=1 and FORCE_COLOR=0 (Commander colours help under FORCE_COLOR even
    on a pipe) and no LMS_API_SERVER_INFO_PATH (it turns off discovery and wake-up), facts §9."""
    lms = script(tmp_path, 'echo "${NO_COLOR-unset} ${FORCE_COLOR-unset} ${LMS_API_SERVER_INFO_PATH-unset}"\n')
    env = {"PATH": os.environ.get("PATH", ""), "FORCE_COLOR": "3", "LMS_API_SERVER_INFO_PATH": "/nonexistent"}
    result = await Lms(lms, env=env).run("--help")
    assert result.stdout.split() == ["1", "0", "unset"]


def test_error_line_names_the_authentication_failure() -> None:
    """A CLI that cannot authenticate ends with `Error: WebSocket connection closed`; the
    cause is the earlier passkey line (BT#1566, facts §9)."""
    stderr = (
        "[LMStudioClient][LLM][ClientPort] WebSocket error: Error: Failed to authenticate: "
        "Invalid passkey for lms CLI client\n"
        "Error: WebSocket connection closed\n"
    )
    assert error_line(stderr) == "Failed to authenticate: Invalid passkey for lms CLI client"


def test_error_line_reads_the_titled_load_failure_of_head() -> None:
    """HEAD prints `Error: <title>`, a `(!) SUGGESTION` and a `(X) CAUSE` block, no frames
    (friendlyErrorDeserializer, facts §9): the title and the cause, then the suggestion."""
    stderr = (
        "Error: \x1b[41m Failed to load model \x1b[0m\n\n\n"
        " \x1b[47m  (!) SUGGESTION  \x1b[0m\n\n"
        "Try a smaller context length.\n\n\n"
        " \x1b[47m  (X) CAUSE  \x1b[0m\n\n"
        "Model loading was stopped due to insufficient system resources.\n"
    )
    assert error_line(stderr) == (
        "Failed to load model: Model loading was stopped due to insufficient system resources. "
        "(suggestion: Try a smaller context length.)"
    )


def test_error_line_reads_the_suggestion_on_its_heading_line() -> None:
    """The real `lms` 07b7252 prints `(!) SUGGESTION <text>` on one line and a title that may end
    in a period (what it printed against the simulator's websocket API): the suggestion is
    not read as part of the title, and the title's period does not end up before the colon."""
    stderr = (
        'Error: Failed to load model "qwen/qwen3-4b". \n\n\n'
        " (!) SUGGESTION Try loading the model with a smaller context length or less GPU offload.\n\n\n"
        "   (X) CAUSE  \n\n"
        "Model loading was stopped due to insufficient system resources.\n"
    )
    assert error_line(stderr) == (
        'Failed to load model "qwen/qwen3-4b": Model loading was stopped due to insufficient system '
        "resources. (suggestion: Try loading the model with a smaller context length or less GPU offload.)"
    )


def test_legacy_json_shapes() -> None:
    """Before ≈0.3.11 `ps --json` items are {identifier, path} and `ls --json` has no modelKey
    (facts §8): both parse, keyed by their path."""
    [inst] = parse_ps([{"identifier": "q", "path": "a/b/q.gguf"}])
    [model] = parse_ls([{"path": "a/b/q.gguf", "type": "llm", "sizeBytes": 3}])
    assert (inst.identifier, inst.model_key, model.model_key) == ("q", "a/b/q.gguf", "a/b/q.gguf")


def test_daemon_up_json_gives_the_version() -> None:
    """`daemon up --json` names the app/llmster version, not the CLI's commit (facts §8)."""
    status = parse_daemon_status({"status": "running", "pid": 7, "isDaemon": True, "version": "0.4.12"}, ["x"])
    assert (status.pid, status.version) == (7, "0.4.12")


def test_device_identifier_marks_lm_link_entries() -> None:
    """`deviceIdentifier` (LM Link builds, facts §9): null is this machine, a string a linked
    device; its presence means this `lms` has the hidden `--local`. `ps` keeps only this
    machine's instances."""
    local = {"identifier": "q", "modelKey": "q", "path": "a/q", "deviceIdentifier": None}
    remote = {**local, "deviceIdentifier": "desk-pc"}
    [here, there] = parse_ls([local, remote])
    [old] = parse_ls([{"modelKey": "q", "path": "a/q"}])
    assert [(m.device, m.lm_link) for m in (here, there, old)] == [(None, True), ("desk-pc", True), (None, False)]
    assert [(m.device, m.lm_link) for m in parse_ps([local, remote])] == [(None, True), ("desk-pc", True)]


async def test_ps_lists_only_this_machines_instances(tmp_path: Path) -> None:
    """An instance on a linked device is not loaded here (facts §9)."""
    lms = script(
        tmp_path,
        """echo '[{"identifier":"q","modelKey":"q","path":"a/q","deviceIdentifier":"desk-pc"},"""
        """{"identifier":"r","modelKey":"r","path":"a/r","deviceIdentifier":null}]'\n""",
    )
    assert [m.identifier for m in await LmsClient(Lms(lms)).ps()] == ["r"]


async def test_runtime_commands(tmp_path: Path) -> None:
    """`runtime_survey` runs `runtime survey --json` (``--refresh`` when asked) and parses
    it; `runtime_ls` parses the table; `runtime_select` passes the name; a CLI without
    `survey` exits 1 with ``unknown command`` and raises LmsExitError with that text."""
    argfile = tmp_path / "args"
    survey = json.dumps({"status": "ok", "engines": []})
    lms = script(
        tmp_path,
        f'printf "%s " "$@" >> {argfile}; echo >> {argfile}\n'
        'case "$2" in\n'
        f"  survey) echo '{survey}' ;;\n"
        "  ls) printf 'LLM ENGINE    SELECTED    MODEL FORMAT\\ncpu@1    ✓    GGUF\\n' ;;\n"
        "esac\n",
    )
    client = LmsClient(Lms(lms))
    found = await client.runtime_survey(refresh=True, timeout=5)
    assert (found.runtime, found.status, found.surveyed_at) == (None, "ok", None)
    await client.runtime_survey()
    assert [r.runtime.key for r in await client.runtime_ls()] == ["cpu@1"]
    await client.runtime_select("cuda@2")
    assert argfile.read_text().splitlines() == [
        "runtime survey --json --refresh ",
        "runtime survey --json ",
        "runtime ls ",
        "runtime select cuda@2 ",
    ]
    old = script(tmp_path, "echo \"error: unknown command 'survey'\" >&2\nexit 1\n")
    with pytest.raises(LmsExitError, match="unknown command 'survey'"):
        await LmsClient(Lms(old)).runtime_survey()
