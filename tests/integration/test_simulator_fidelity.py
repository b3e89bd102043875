"""Fidelity of the simulator to shared/lmstudio-facts.md: (command) -> (stdout, stderr, exit).

Each row names the facts-sheet line it checks. JSON shapes are compared with real
samples quoted from the sheet, so a drift in field names or types fails here.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from lmsupervisor.pids import pid_alive
from lmsupervisor.simulator.home import SimInstall
from lmsupervisor.simulator.profiles import PROFILES
from tests.conftest import NO_IPV6, cpu_bound, eventually

pytestmark = pytest.mark.integration

# facts §3: "A real `ps --json` line (observed, 2026)"
REAL_PS_LINE = json.loads(
    '{"type":"llm","modelKey":"ornith-1.0-35b-mlx-oq8","format":"safetensors","displayName":'
    '"Ornith 1.0 35B OQ8","publisher":"jedisct1","path":"jedisct1/Ornith-1.0-35B-MLX-oQ8",'
    '"sizeBytes":37726897291,"indexedModelIdentifier":"jedisct1/Ornith-1.0-35B-MLX-oQ8",'
    '"deviceIdentifier":null,"paramsString":"35B","architecture":"qwen3_5_moe","quantization":'
    '{"name":"8bit","bits":8},"identifier":"ornith-1.0-35b-mlx-oq8","ttlMs":null,"lastUsedTime":'
    '1786252670392,"vision":true,"trainedForToolUse":true,"maxContextLength":262144,'
    '"contextLength":65536,"status":"idle","queued":0,"parallel":2}'
)
INSTANCE_FIELDS = {"identifier", "ttlMs", "lastUsedTime", "contextLength", "status", "queued", "parallel"}
ORNITH_PATH = "jedisct1/Ornith-1.0-35B-MLX-oQ8"
TYPE_NAMES = ("int", "str", "bool")


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively: what a consumer of the JSON depends on."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


ALL_PROFILES = list(PROFILES)
GEMMA_PATH = "lmstudio-community/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf"
LLMSTER = ("0.4",)
LLMSTER_040 = ("0.4.0",)  # llmster 0.4.0 with the `lms` of 2026-01-27 (sizes in GB, no LM Link)
APP_04 = ("0.4-app",)
HEAD_CLI = ("0.4", "0.4-app", "0.4.0")  # Commander with HEAD's help, spinner and titled load errors
HAS_DAEMON_STATUS = ("0.4", "0.4-app", "0.4.0", "0.3.31")
CMDTS = ("0.3-cmdts", "0.3.10", "0.3.8")
LEGACY_JSON = ("0.3.10", "0.3.8")  # before ≈0.3.11: `ps --json` {identifier, path}, `ls --json` without modelKey
LM_LINK = tuple(name for name, row in PROFILES.items() if row.load_local)  # deviceIdentifier (2026-02+)
BIND_FLAG = ("0.4", "0.4-app", "0.4.0", "0.3")


def up(sim: SimInstall, state: str) -> None:
    """Bring ``sim`` to ``state``: none, daemon, server, or model (server + one model)."""
    if state == "none":
        return
    # Without `daemon up`, any client command wakes the service (facts §1).
    has_up = "up" in sim.release.daemon
    assert sim.lms(*(["daemon", "up"] if has_up else ["ps"])).returncode == 0
    if state in ("server", "model"):
        assert sim.lms("server", "start").returncode == 0
    if state == "model":
        assert sim.lms("load", ORNITH_PATH, "--exact", "--yes").returncode == 0


def cmdts_box(shown: str, caret: int, message: str, command: str) -> str:
    """cmd-ts's error box as a regex ([cmd-ts] errorBox.ts, no colours when piped)."""
    return re.escape(
        f"error: found 1 error\n\n  {shown}\n  {' ' * caret} ^ {message}\n\n\n"
        f"hint: for more information, try '{command} --help'\n"
    )


def by_profile(default: Any, groups: dict[tuple[str, ...], Any]) -> Any:
    """An expectation that differs by release line: ``groups`` maps tuples of names to it."""
    return ("by-profile", default, groups)


# The error each dialect prints for `lms daemon ...` where `daemon` does not exist.
NO_DAEMON = {
    CMDTS: (1, "", cmdts_box("{argv}", 0, "Not a valid subcommand name", "lms")),
    ("0.3",): (1, "", r"^error: unknown command 'daemon'\n$"),
}

# One session per release line, in order: (id, argv, exit code, stdout, stderr regex).
# stdout: "" (nothing), a regex, "ls-shape"/"ps-shape", or a JSON value in which a type
# name ("int", "str", "bool") stands for any value of that type. `{argv}` in a regex is
# the command line as cmd-ts echoes it. Sources: facts §3 (wordings), §8 (release lines), and
# what the real `lms` 07b7252 printed against the simulator (wordings that date from 2024-04
# apply to every row).
# `lms load` on the 0.4 rows draws its spinner on stdout, as the real 07b7252 did on a pipe
SPINNER = re.compile(r"^\x1b\[\?25l\nLoading \S+ [\u2800-\u28ff]\n\x1b\[K\x1b\[\?25h$")
LOAD_HINTS = (
    r"To see a list of all downloaded models, run:\n\n    lms ls\n\n"
    r"To select a model interactively, remove the --yes flag:\n\n    lms load\n$"
)
SESSION: list[tuple[str, list[str], Any]] = [
    (
        "version-json",
        ["version", "--json"],
        # facts §9: the CLI package's 0.0.x before 2026-01-02, the commit since
        by_profile(
            (0, {"version": "0.0.46"}, r"^$"),
            {
                HEAD_CLI: (0, {"version": "str"}, r"^$"),
                ("0.3-cmdts",): (0, {"version": "0.0.38"}, r"^$"),
                ("0.3.10",): (0, {"version": "0.0.15"}, r"^$"),
                ("0.3.8",): (0, {"version": "0.0.14"}, r"^$"),
            },
        ),
    ),
    ("dash-v", ["-v"], (0, re.compile(r"^CLI commit: \w+\n$"), r"^$")),
    (
        "daemon-status-down-json",
        ["daemon", "status", "--json"],
        by_profile((0, {"status": "not-running"}, r"^$"), NO_DAEMON),
    ),
    (
        "daemon-status-down-text",
        ["daemon", "status"],
        by_profile((0, re.compile(r"^LM Studio is not running\n$"), r"^$"), NO_DAEMON),
    ),
    ("server-status-off-json", ["server", "status", "--json"], (0, {"running": False, "port": "int"}, r"^$")),
    ("server-status-off-text", ["server", "status"], (0, "", r"^The server is not running\.\n$")),
    (
        "server-start-wakes-service",
        ["server", "start"],
        (0, "", r"^Waking up LM Studio service\.\.\.\nSuccess! Server is now running on port \d+\n$"),
    ),
    (
        "daemon-status-up-json",
        ["daemon", "status", "--json"],
        by_profile(
            (0, {"status": "running", "pid": "int", "isDaemon": False}, r"^$"),
            {**NO_DAEMON, LLMSTER + LLMSTER_040: (0, {"status": "running", "pid": "int", "isDaemon": True}, r"^$")},
        ),
    ),
    (
        "daemon-status-up-text",
        ["daemon", "status"],
        by_profile(
            (0, re.compile(r"^LM Studio v0\.3\.31 is running \(PID: \d+\)\n$"), r"^$"),
            {
                **NO_DAEMON,
                LLMSTER: (0, re.compile(r"^llmster v0\.4\.12 is running \(PID: \d+\)\n$"), r"^$"),
                LLMSTER_040: (0, re.compile(r"^llmster v0\.4\.0 is running \(PID: \d+\)\n$"), r"^$"),
                APP_04: (0, re.compile(r"^LM Studio v0\.4\.12 is running \(PID: \d+\)\n$"), r"^$"),
            },
        ),
    ),
    (
        "daemon-up-already",
        ["daemon", "up"],
        by_profile(
            (1, "", r"^error: unknown command 'up'\n$"),
            {
                **NO_DAEMON,
                LLMSTER + LLMSTER_040: (0, re.compile(r"^The daemon is already running \(PID: \d+\)\.\n$"), r"^$"),
                APP_04: (
                    0,
                    re.compile(r"^LM Studio is already running \(PID: \d+\); not starting a second daemon\.\n$"),
                    r"^$",
                ),
            },
        ),
    ),
    (
        "daemon-up-json",
        ["daemon", "up", "--json"],
        by_profile(
            (1, "", r"^error: unknown command 'up'\n$"),
            {
                **NO_DAEMON,
                LLMSTER: (0, {"status": "running", "pid": "int", "isDaemon": True, "version": "0.4.12"}, r"^$"),
                LLMSTER_040: (0, {"status": "running", "pid": "int", "isDaemon": True, "version": "0.4.0"}, r"^$"),
                APP_04: (0, {"status": "running", "pid": "int", "isDaemon": False, "version": "0.4.12"}, r"^$"),
            },
        ),
    ),
    (
        "server-start-bind-loopback",
        ["server", "start", "--bind", "127.0.0.1"],
        by_profile(
            (0, "", r"^Success! Server is now running on port \d+\n$"),
            {
                ("0.3.31",): (1, "", r"^error: unknown option '--bind'\n$"),
                CMDTS: (1, "", cmdts_box("{argv}", len("server start"), "Unknown arguments", "lms server start")),
            },
        ),
    ),
    ("server-status-on-json", ["server", "status", "--json"], (0, {"running": True, "port": "int"}, r"^$")),
    ("server-status-on-text", ["server", "status"], (0, "", r"^The server is running on port \d+\.\n$")),
    ("ps-empty-json", ["ps", "--json"], (0, [], r"^$")),
    (
        "ps-empty-text",
        ["ps"],
        (0, "", r"^No models are currently loaded\.\n\nTo load a model, run:\n\n    lms load <model path>\n$"),
    ),
    ("ls-json", ["ls", "--json"], (0, "ls-shape", r"^$")),
    ("ls-text", ["ls"], (0, re.compile(r"^You have \d+ models, taking up [\d.]+ GB of disk space\."), r"^$")),
    (
        "load-exact",
        ["load", ORNITH_PATH, "--exact", "--yes"],
        by_profile(  # formatElapsedTime: `311.00ms` under a second; GiB since ee91760 (2026-02)
            (
                0,
                "",
                r"^Model loaded successfully in [\d.]+m?s\.\n\(37\.73 GB\)\nTo use the model in the API/SDK, use the "
                r'identifier "ornith-1\.0-35b-mlx-oq8"\.\n$',
            ),
            {
                ("0.4", "0.4-app"): (
                    0,
                    SPINNER,
                    r"^Model loaded successfully in [\d.]+m?s\.\n\(35\.14 GiB\)\nTo use the model in the API/SDK, use "
                    r'the identifier "ornith-1\.0-35b-mlx-oq8"\.\n$',
                ),
                LLMSTER_040: (
                    0,
                    SPINNER,
                    r"^Model loaded successfully in [\d.]+m?s\.\n\(37\.73 GB\)\nTo use the model in the API/SDK, use "
                    r'the identifier "ornith-1\.0-35b-mlx-oq8"\.\n$',
                ),
            },
        ),
    ),
    ("ps-json", ["ps", "--json"], (0, "ps-shape", r"^$")),
    (
        "ps-text",
        ["ps"],
        # columnify: a blank line, then columns padded to their width and 4 spaces apart
        (
            0,
            re.compile(r"^\nIDENTIFIER {4,}MODEL {4,}STATUS {4,}SIZE {4,}CONTEXT {4,}PARALLEL {4,}DEVICE {4,}TTL\n"),
            r"^$",
        ),
    ),
    (
        "load-duplicate-makes-:2",
        ["load", ORNITH_PATH, "--exact", "--yes"],
        by_profile(
            (0, "", r'use the identifier "ornith-1\.0-35b-mlx-oq8:2"'),
            {HEAD_CLI: (0, SPINNER, r'use the identifier "ornith-1\.0-35b-mlx-oq8:2"')},
        ),
    ),
    (
        "status-on",
        ["status"],
        (
            0,
            re.compile(
                r"^Server: ON \(port: \d+\)\n\nLoaded Models\n  · ornith-1\.0-35b-mlx-oq8 - 37\.73 GB\n"
                r"  · ornith-1\.0-35b-mlx-oq8:2 - 37\.73 GB\n$"
            ),
            r"^$",
        ),
    ),
    (
        "unload-known",
        ["unload", "ornith-1.0-35b-mlx-oq8:2"],
        (0, "", r'^Model "ornith-1\.0-35b-mlx-oq8:2" unloaded\.\n$'),
    ),
    (
        "unload-unknown-exits-0",
        ["unload", "nope"],
        (
            0,
            "",
            r'^Model Not Found\n\nCannot find a model with the identifier "nope"\.\n\n'
            r"To see a list of loaded models, run:\n\n    lms ps\n$",
        ),
    ),
    (
        "load-exact-needs-path-not-key",
        ["load", "ornith-1.0-35b-mlx-oq8", "--exact", "--yes"],
        (
            1,
            "",
            r'^Model not found\n\nNo model found with path being exactly "ornith-1\.0-35b-mlx-oq8"\.\n\n'
            r"To disable exact matching, remove the --exact flag\.\n\n"
            r"To see a list of all downloaded models, run:\n\n    lms ls\n\n"
            r"Note, you need to provide the full model path\. For example:\n\n  lms load --exact \S+\n$",
        ),
    ),
    (
        "load-yes-unknown",
        ["load", "zzzz-no-such", "--yes"],
        by_profile(  # fuzzy over paths before 066002e (2026-02-11, LM Link), over model keys since
            (1, "", r'^Model not found\n\nNo model found that matches path "zzzz-no-such"\.\n\n' + LOAD_HINTS),
            {
                LM_LINK: (
                    1,
                    "",
                    r'^Model not found\n\nNo model found that matches model key "zzzz-no-such"\.\n\n' + LOAD_HINTS,
                )
            },
        ),
    ),
    (
        "get-already",
        ["get", "openai/gpt-oss-20b", "--yes"],
        (0, "", r"^Model already downloaded\. To use, run: lms load openai/gpt-oss-20b\n$"),
    ),
    ("get-downloads", ["get", "ibm/granite-4-micro", "--yes"], (0, "", r"lms load ibm/granite-4-micro")),
    ("get-unknown", ["get", "nobody/nothing", "--yes"], (1, "", r"^Error: ")),
    (
        "unknown-option",
        ["ps", "--bogus"],
        by_profile(
            (1, "", r"^error: unknown option '--bogus'\n$"),
            {CMDTS: (1, "", cmdts_box("ps --bogus", len("ps"), "Unknown arguments", "lms ps"))},
        ),
    ),
    (
        "unknown-command",
        ["frobnicate"],
        by_profile(
            (1, "", r"^error: unknown command 'frobnicate'\n$"),
            {CMDTS: (1, "", cmdts_box("frobnicate", 0, "Not a valid subcommand name", "lms"))},
        ),
    ),
    (
        # facts §8: an uncaught SDK error, its stack, the cause after the last "- Caused By:",
        # with the version's guardrail wording (0.89 GB = 0.81 GB x 1.1); HEAD (§9): a
        # titled error with (!) SUGGESTION and (X) CAUSE blocks, no frames
        "load-guardrail-stack",
        ["load", GEMMA_PATH, "--exact", "--yes"],
        by_profile(
            (
                1,
                "",
                r"^Error: Channel Error\n(    at .*\n)+(- Caused By: Error: .*\n(    at .*\n)*)*"
                r"- Caused By: Error: Model loading was stopped due to insufficient system resources\. Under the "
                r"current settings, this model requires approximately 0\.89 GB of memory, .*\n(    at .*\n)+$",
            ),
            {
                CMDTS: (
                    1,
                    "",
                    r"^Error: Channel Error\n(    at .*\n)+(- Caused By: Error: .*\n(    at .*\n)*)*"
                    r"- Caused By: Error: Model loading aborted due to insufficient system resources\. .*\n"
                    r"(    at .*\n)+$",
                ),
                HEAD_CLI: (
                    1,
                    SPINNER,
                    # what the real `lms` 07b7252 printed: the suggestion on its heading's line
                    r"^Error: Failed to load model \n\n\n \(!\) SUGGESTION Try .+\n\n\n   \(X\) CAUSE  \n\n"
                    r"Model loading was stopped due to insufficient system resources\. .*\n$",
                ),
            },
        ),
    ),
    ("unload-all", ["unload", "--all"], (0, "", r'^Unloading "ornith-1\.0-35b-mlx-oq8"\.\.\.\nUnloaded 1 model\.\n$')),
    ("unload-all-none", ["unload", "-a"], (0, "", r"^No models to unload\.\n$")),
    (
        "unload-no-arg-none-loaded",
        ["unload"],
        (1, "", r'^You don\'t have any models loaded\. Use "lms load" to load a model\.\n$'),
    ),
    ("server-stop", ["server", "stop"], (0, "", r"^Stopped the server on port \d+\.\n$")),
    ("server-stop-not-running", ["server", "stop"], (1, "", r"^Error: The server is not running\.\n$")),
    (
        "status-off",
        ["status"],
        (
            0,
            re.compile(
                r"^Server:  OFF \n\n\(i\) To start the server, run the following command:\n\n    lms server start\n$"
            ),
            r"^$",
        ),
    ),
    (
        "daemon-down",
        ["daemon", "down"],
        by_profile(
            (1, "", r"^error: unknown command 'down'\n$"),
            {
                **NO_DAEMON,
                LLMSTER + LLMSTER_040: (0, "", r"^Shutting down llmster\.\.\.\nDone\.\n$"),
                APP_04: (
                    1,
                    "",
                    r"^The daemon is currently running as part of LM Studio\. Please exit LM Studio to stop it\.\n$",
                ),
            },
        ),
    ),
]


def expected_for(profile: str, expectation: Any) -> tuple[int, Any, str]:
    """The (code, stdout, stderr) a release line should show for one session step."""
    if expectation[0] != "by-profile":
        return expectation  # type: ignore[no-any-return]
    _, default, groups = expectation
    for names, value in groups.items():
        if profile in names:
            return value  # type: ignore[no-any-return]
    return default  # type: ignore[no-any-return]


def check_stdout(profile: str, stdout: str, expected: Any) -> None:
    """``stdout`` matches ``expected`` (see SESSION); JSON must be compact as JSON.stringify writes it."""
    if isinstance(expected, re.Pattern):
        assert expected.search(stdout), stdout
        return
    if expected == "":
        assert stdout == ""
        return
    value = json.loads(stdout)
    assert stdout.endswith("\n") and ", " not in stdout  # JSON.stringify: compact
    real_line = dict(REAL_PS_LINE)
    if profile not in LM_LINK:  # deviceIdentifier arrived with LM Link (066002e, 2026-02, facts §9)
        real_line.pop("deviceIdentifier")
    if expected == "ls-shape":
        real_ls = {k: v for k, v in shape(real_line).items() if k not in INSTANCE_FIELDS}
        if profile in LEGACY_JSON:  # before [js] 52ff1cbe (2025-01-28): no modelKey (facts §8)
            real_ls.pop("modelKey")
        assert shape(value[3]) == real_ls  # the Ornith model, as the facts sheet shows it
        assert all("identifier" not in i for i in value)
    elif expected == "ps-shape":
        if profile in LEGACY_JSON:  # before ≈0.3.11: {identifier, path} only (facts §8)
            assert value == [{"identifier": "ornith-1.0-35b-mlx-oq8", "path": ORNITH_PATH}]
        else:
            assert shape(value) == [shape(real_line)]
    elif isinstance(expected, list):
        assert shape(value) == expected
    else:  # a type name stands for "any value of that type", anything else is literal
        seen = {
            k: shape(v) if isinstance(expected.get(k), str) and expected[k] in TYPE_NAMES else v
            for k, v in value.items()
        }
        assert seen == expected


@cpu_bound(3.0)  # about 30 `lms` processes, each a Python start-up
@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_lms_session(make_sim: Any, profile: str) -> None:
    """A whole `lms` session prints, on each release line, what facts §3 and §8 say: streams,
    wordings, JSON shapes and exit codes, from nothing running to the daemon going down."""
    sim = make_sim(profile=profile, time_scale=0.005)  # two 37 GB loads in about 0.25 s each
    sim.fail_load("google/gemma-3-1b")  # only the guardrail step loads it
    for step, argv, expectation in SESSION:
        code, stdout, stderr = expected_for(profile, expectation)
        result = sim.lms(*argv)
        stderr = stderr.replace(re.escape("{argv}"), re.escape(" ".join(argv)))
        assert (result.returncode, bool(re.search(stderr, result.stderr))) == (code, True), (step, result)
        try:
            check_stdout(profile, result.stdout, stdout)
        except AssertionError as exc:
            raise AssertionError(f"{step}: {result}") from exc


def test_load_gpu_auto_is_rejected(sim: SimInstall) -> None:
    """facts §3: `--gpu` takes off, max or a ratio; `auto` is refused by Commander's parser."""
    result = sim.lms("load", ORNITH_PATH, "--gpu", "auto")
    assert (result.returncode, "Not a number" in result.stderr) == (1, True)


def test_daemon_status_and_down_when_nothing_runs(sim: SimInstall) -> None:
    """0.4: `daemon down` with no daemon says so and exits 1; `daemon up` starts llmster."""
    down = sim.lms("daemon", "down")
    assert (down.returncode, down.stderr) == (1, "Daemon is not running.\n")
    started = sim.lms("daemon", "up")
    assert (started.returncode, bool(re.fullmatch(r"llmster started \(PID: \d+\)\.\n", started.stdout))) == (0, True)


def test_teardown_never_kills_a_process_that_reuses_a_stale_daemon_pid(sim: SimInstall) -> None:
    """SimInstall.stop() with no daemon answering and a PID in http-server.json that now belongs
    to an unrelated process (PIDs wrap quickly on a busy machine) leaves that process alone;
    the teardown of one test must not kill another test's daemon or supervisor."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = sim.home / ".internal" / "http-server.json"
        info.write_text(json.dumps({"host": "127.0.0.1", "pid": other.pid, "port": sim.api_port}))
        sim.stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_daemon_down_returns_before_the_process_exits(make_sim: Any) -> None:
    """facts §8: 0.4 `daemon down` requests the shutdown and prints Done. while llmster still runs."""
    sim = make_sim()
    sim.configure(daemon_stop_s=100)  # 2 s wall at the test scale: the window is wide open
    up(sim, "daemon")
    pid = sim.daemon_pid()
    assert sim.lms("daemon", "down").returncode == 0
    assert (pid is not None, pid_alive(pid or 0)) == (True, True)
    assert eventually(lambda: not pid_alive(pid or 0), timeout=10)


@pytest.mark.parametrize(("profile", "held"), [("0.3.31", True), ("0.4-app", False)])
def test_a_hung_app_holds_discovery_only_before_2025_11(make_sim: Any, profile: str, held: bool) -> None:
    """Before [lms] 7795183 (2025-11-27) discovery fetched the API ports with no timeout: a hung
    app holds `lms daemon status` (until undici's 300 s); since then each probe gives up after
    3 s and it says LM Studio is not running. `server stop` checks the HTTP server first (500 ms)
    on both: "The server is not running." at once, without asking the app."""
    sim = make_sim(profile=profile)
    sim.launch_app()
    sim.hang_daemon()
    try:
        status = sim.lms("daemon", "status", "--json", timeout=10)
        answer = json.loads(status.stdout)["status"]
    except subprocess.TimeoutExpired:
        answer = "held"
    assert answer == ("held" if held else "not-running")
    stop = sim.lms("server", "stop", timeout=10)
    assert (stop.returncode, stop.stderr.splitlines()[-1]) == (1, "Error: The server is not running.")


def test_app_holding_the_service_refuses_daemon_down(make_sim: Any) -> None:
    """0.4-app: the GUI app holds the service, `daemon down` refuses (exit 1) and the app lives on."""
    sim = make_sim(profile="0.4-app")
    up(sim, "daemon")
    pid = sim.daemon_pid()
    result = sim.lms("daemon", "down")
    assert (result.returncode, "Please exit LM Studio to stop it." in result.stderr) == (1, True)
    assert sim.daemon_pid() == pid


@pytest.mark.parametrize("profile", ["0.4", "0.4-app"])
def test_bind_all_fails_verification_while_serving(make_sim: Any, profile: str) -> None:
    """BT#1720: `server start --bind 0.0.0.0` exits 1 with the verify error while the server
    answers on loopback, and `server status` says it is not running."""
    sim = make_sim(profile=profile)
    result = sim.lms("server", "start", "--bind", "0.0.0.0")
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        1,
        "Error: Failed to verify the server is running. Please try to use another port.",
    )
    assert _get(sim, "/lmstudio-greeting") == (200, {"lmstudio": True})
    assert json.loads(sim.server_config_path.read_text())["networkInterface"] == "0.0.0.0"
    status = sim.lms("server", "status", "--json")
    assert json.loads(status.stdout)["running"] is False


def _greets_at(host: str, port: int) -> bool:
    """Whether LM Studio's greeting answers at ``http://{host}:{port}`` (``host`` bracketed for IPv6)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/lmstudio-greeting", timeout=5) as resp:
            return bool(json.loads(resp.read()) == {"lmstudio": True})
    except OSError:
        return False


@NO_IPV6
@pytest.mark.parametrize(("bind", "served"), [("::1", (True, False)), ("::", (True, True))])
def test_an_ipv6_bind_is_served_on_ipv6_loopback(make_sim: Any, bind: str, served: tuple[bool, bool]) -> None:
    """`server start --bind ::1` serves on [::1] only, `--bind ::` dual-stack as Node's listen
    does (here on loopback: [::1] and 127.0.0.1). lms verifies at `http://${bind}:${port}`,
    which is no URL for an IPv6 address: exit 1 with the verify error while serving (as BT#1720)."""
    sim = make_sim()
    result = sim.lms("server", "start", "--bind", bind)
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        1,
        "Error: Failed to verify the server is running. Please try to use another port.",
    )
    assert (_greets_at("[::1]", sim.http_port), _greets_at("127.0.0.1", sim.http_port)) == served
    assert json.loads(sim.server_config_path.read_text())["networkInterface"] == bind


@pytest.mark.parametrize("profile", ["0.3.31", "0.3-cmdts"])
def test_without_bind_the_saved_interface_is_kept(make_sim: Any, profile: str) -> None:
    """facts §8: before --bind, `server start` sent no networkInterface: the saved LAN
    setting is kept, CORS is still reset, and verification at loopback succeeds."""
    sim = make_sim(profile=profile)
    cfg = json.loads(sim.server_config_path.read_text())
    cfg.update(cors=True, networkInterface="0.0.0.0")
    sim.server_config_path.write_text(json.dumps(cfg))
    assert sim.lms("server", "start").returncode == 0
    after = json.loads(sim.server_config_path.read_text())
    assert (after["cors"], after["networkInterface"]) == (False, "0.0.0.0")


def test_lms_server_host_is_read_by_bind_capable_lms(make_sim: Any) -> None:
    """facts §3: LMS_SERVER_HOST sets the bind when --bind is absent (0.4)."""
    sim = make_sim()
    env = {**sim.env(), "LMS_SERVER_HOST": "127.0.0.1"}
    proc = subprocess.run(
        [str(sim.lms_path), "server", "start"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_appimage_install_cannot_be_woken(make_sim: Any) -> None:
    """lms#97/BT#1068: an AppImage app records a /tmp/.mount_* path that is gone; lms fails
    with LM Studio's words until the user launches the app, then works."""
    sim = make_sim(profile="0.3.31", layout="appimage")
    location = json.loads((sim.home / ".internal" / "app-install-location.json").read_text())
    assert (location["path"].startswith("/tmp/.mount_LM-Stu"), os.path.exists(location["path"])) == (True, False)
    result = sim.lms("server", "start")
    assert (result.returncode, result.stderr) == (
        1,
        "LM Studio daemon is not running and no valid installation could be found or installed.\n"
        "Error: Failed to start or connect to local LM Studio API server.\n",
    )
    sim.launch_app()
    assert sim.lms("server", "start").returncode == 0


def test_dangling_llmster_location_does_not_fall_back_to_the_app(make_sim: Any) -> None:
    """facts §8: llmster-install-location.json naming a missing path is an error, even with an app installed."""
    sim = make_sim()
    llmster = Path(json.loads((sim.home / ".internal" / "llmster-install-location.json").read_text())["path"])
    app = sim.root / "Applications" / "LM-Studio-0.4.12-x64.AppImage"
    app.parent.mkdir(parents=True)
    llmster.rename(app)
    (sim.home / ".internal" / "app-install-location.json").write_text(json.dumps({"path": str(app)}))
    result = sim.lms("ps")
    assert (result.returncode, "no valid installation" in result.stderr, sim.daemon_pid()) == (1, True, None)


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_ttl_unloads_idle_models(make_sim: Any, profile: str) -> None:
    """facts §8: a model loaded with --ttl is unloaded by LM Studio after that many idle seconds;
    before 0.3.9 (facts §9) cmd-ts rejects --ttl and the whole load fails."""
    sim = make_sim(profile=profile)
    up(sim, "daemon")
    with_ttl = sim.lms("load", ORNITH_PATH, "--exact", "--yes", "--ttl", "5")
    if not sim.release.ttl_flag:
        assert (with_ttl.returncode, "Unknown arguments" in with_ttl.stderr, sim.loaded()) == (1, True, [])
        return
    assert with_ttl.returncode == 0
    assert sim.lms("load", GEMMA_PATH, "--exact", "--yes").returncode == 0
    # TTL 5 simulated s = 0.1 wall s at the test scale
    assert eventually(lambda: [m["modelKey"] for m in sim.loaded()] == ["google/gemma-3-1b"])


def test_lms_call_cost_is_spent(make_sim: Any) -> None:
    """Every `lms` call first spends its configured CPU (what a Node CLI start costs)."""
    sim = make_sim(lms_cost=(0.2, 0.0))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert sim.lms("version").returncode == 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) >= 0.2


def test_plain_server_start_resets_cors_and_bind(sim: SimInstall) -> None:
    """BT#1334: `server start` without flags starts with CORS off and bind 127.0.0.1, and
    the daemon writes them back to http-server-config.json."""
    cfg = json.loads(sim.server_config_path.read_text())
    cfg.update(cors=True, networkInterface="0.0.0.0")
    sim.server_config_path.write_text(json.dumps(cfg))
    assert sim.lms("server", "start").returncode == 0
    after = json.loads(sim.server_config_path.read_text())
    assert (after["cors"], after["networkInterface"]) == (False, "127.0.0.1")


def test_server_start_keeps_declared_settings(sim: SimInstall) -> None:
    """`server start --cors --bind` persists what it was given."""
    assert sim.lms("server", "start", "--cors", "--bind", "127.0.0.1").returncode == 0
    after = json.loads(sim.server_config_path.read_text())
    assert after["cors"] is True
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.http_port}/lmstudio-greeting") as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "*"


def test_http_server_is_down_until_started(sim: SimInstall) -> None:
    """The daemon alone does not serve HTTP (autoStartOnLaunch false, llmster's default)."""
    up(sim, "daemon")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{sim.http_port}/lmstudio-greeting", timeout=2)


def test_daemon_publishes_api_server_info(sim: SimInstall) -> None:
    """0.4 writes .internal/http-server.json {host, pid, port} with the API port and its PID."""
    up(sim, "daemon")
    info = json.loads((sim.home / ".internal" / "http-server.json").read_text())
    assert (set(info), info["pid"], info["port"]) == ({"host", "pid", "port"}, sim.daemon_pid(), sim.api_port)
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.api_port}/lms-status") as resp:
        status = json.loads(resp.read())
    assert isinstance(status["package"], str) and isinstance(status["version"], str)


def test_legacy_app_publishes_no_api_server_info(make_sim: Any) -> None:
    """0.3 predates http-server.json and /lms-status; the API port answers the greeting."""
    sim = make_sim(profile="0.3")
    up(sim, "server")
    assert not (sim.home / ".internal" / "http-server.json").exists()
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.api_port}/lms-status") as resp:
        assert "error" in json.loads(resp.read())
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.api_port}/lmstudio-greeting") as resp:
        assert json.loads(resp.read()) == {"lmstudio": True}


def _get(sim: SimInstall, path: str) -> tuple[int, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.http_port}{path}", timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def _post(sim: SimInstall, path: str, body: dict[str, Any]) -> tuple[int, bytes, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{sim.http_port}{path}",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def test_http_endpoints(sim: SimInstall) -> None:
    """Greeting, the three model lists and unknown routes answer as facts §4 says."""
    up(sim, "model")
    assert _get(sim, "/lmstudio-greeting") == (200, {"lmstudio": True})
    status, v1 = _get(sim, "/v1/models")
    assert status == 200 and v1["object"] == "list"
    assert set(v1["data"][0]) == {"id", "object", "owned_by"}
    # JIT on (the default): every downloaded model is listed, not only the loaded one.
    assert {"openai/gpt-oss-20b", "ornith-1.0-35b-mlx-oq8"} <= {m["id"] for m in v1["data"]}
    _, v0 = _get(sim, "/api/v0/models")
    states = {m["id"]: m["state"] for m in v0["data"]}
    assert (states["ornith-1.0-35b-mlx-oq8"], states["openai/gpt-oss-20b"]) == ("loaded", "not-loaded")
    assert {m["type"] for m in v0["data"]} == {"llm", "vlm", "embeddings"}
    _, v1native = _get(sim, "/api/v1/models")
    by_key = {m["key"]: m for m in v1native["models"]}
    assert [i["id"] for i in by_key["ornith-1.0-35b-mlx-oq8"]["loaded_instances"]] == ["ornith-1.0-35b-mlx-oq8"]
    assert by_key["openai/gpt-oss-20b"]["loaded_instances"] == []
    assert _get(sim, "/chat/completions") == (200, {"error": "Unexpected endpoint or method. (GET /chat/completions)"})
    status, body, _ = _post(sim, "/v1/nothing", {})
    assert (status, json.loads(body)) == (200, {"error": "Unexpected endpoint or method. (POST /v1/nothing)"})


def test_v1_models_lists_only_loaded_when_jit_off(make_sim: Any) -> None:
    """facts §4: with JIT off, /v1/models lists only loaded models."""
    sim = make_sim(server_config={"justInTimeModelLoading": False})
    up(sim, "model")
    assert [m["id"] for m in _get(sim, "/v1/models")[1]["data"]] == ["ornith-1.0-35b-mlx-oq8"]


def test_chat_completions_json_and_sse(sim: SimInstall) -> None:
    """A chat completion answers chat.completion JSON, or SSE chunks ending in [DONE]."""
    up(sim, "model")
    body = {"model": "ornith-1.0-35b-mlx-oq8", "messages": [{"role": "user", "content": "hi"}]}
    status, raw, _ = _post(sim, "/v1/chat/completions", body)
    reply = json.loads(raw)
    assert (status, reply["object"], reply["choices"][0]["message"]["role"]) == (200, "chat.completion", "assistant")
    assert reply["id"].startswith("chatcmpl-")
    status, raw, ctype = _post(sim, "/v1/chat/completions", {**body, "stream": True})
    frames = [f for f in raw.decode().split("\n\n") if f]
    assert ctype.startswith("text/event-stream") and frames[-1] == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_responses_endpoint(sim: SimInstall) -> None:
    """/v1/responses answers a response object, and streams response.* events."""
    up(sim, "model")
    status, raw, _ = _post(sim, "/v1/responses", {"model": "ornith-1.0-35b-mlx-oq8", "input": ""})
    assert (status, json.loads(raw)["object"]) == (200, "response")
    _, raw, _ = _post(sim, "/v1/responses", {"model": "ornith-1.0-35b-mlx-oq8", "input": "", "stream": True})
    events = re.findall(r"^event: (\S+)$", raw.decode(), re.M)
    assert (events[0], events[-1]) == ("response.created", "response.completed")


def test_chat_errors_without_models(make_sim: Any) -> None:
    """JIT off and nothing loaded: 404 "No models loaded"; JIT on, unknown model: 400."""
    sim = make_sim(server_config={"justInTimeModelLoading": False})
    up(sim, "server")
    status, raw, _ = _post(sim, "/v1/chat/completions", {"model": "x", "messages": []})
    assert status == 404 and "No models loaded" in json.loads(raw)["error"]["message"]
    jit = make_sim("jit")
    up(jit, "server")
    status, raw, _ = _post(jit, "/v1/chat/completions", {"model": "nobody/nothing", "messages": []})
    err = json.loads(raw)["error"]
    assert (status, err["code"]) == (400, "model_not_found")
    assert err["message"].startswith('Invalid model identifier "nobody/nothing"')


def test_jit_load_and_ttl_expiry(sim: SimInstall) -> None:
    """A request for a downloaded model JIT-loads it; a --ttl model is unloaded after its TTL."""
    up(sim, "server")
    status, _, _ = _post(sim, "/v1/chat/completions", {"model": "google/gemma-3-1b", "messages": []})
    assert status == 200
    assert [m["identifier"] for m in sim.loaded()] == ["google/gemma-3-1b"]
    assert sim.lms("load", ORNITH_PATH, "--exact", "--yes", "--ttl", "5").returncode == 0
    import time

    deadline = time.monotonic() + 5  # TTL 5 simulated s = 0.1 wall s at the test scale
    while time.monotonic() < deadline and any(m["modelKey"] == "ornith-1.0-35b-mlx-oq8" for m in sim.loaded()):
        time.sleep(0.02)
    assert [m["modelKey"] for m in sim.loaded()] == ["google/gemma-3-1b"]


def _request(sim: SimInstall, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{sim.http_url}{path}", method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_rest_v1_only_on_04(make_sim: Any, profile: str) -> None:
    """facts §8: /api/v1/models exists from 0.4.0; older releases answer it as an unknown route."""
    sim = make_sim(profile=profile)
    up(sim, "server")
    status, body = _request(sim, "GET", "/api/v1/models")
    if profile.startswith("0.4"):
        assert (status, {m["key"] for m in body["models"]} >= {"openai/gpt-oss-20b"}) == (200, True)
    else:
        assert (status, body) == (200, {"error": "Unexpected endpoint or method. (GET /api/v1/models)"})


def test_rest_v1_load_unload_download(sim: SimInstall) -> None:
    """facts §4: load (not idempotent: :2), loaded_instances, unload, download job and its status."""
    up(sim, "server")
    status, loaded = _request(sim, "POST", "/api/v1/models/load", {"model": "qwen/qwen3-4b", "echo_load_config": True})
    assert (status, loaded["instance_id"], loaded["status"], loaded["type"]) == (200, "qwen/qwen3-4b", "loaded", "llm")
    assert set(loaded) == {"type", "instance_id", "load_time_seconds", "status", "load_config"}
    _, again = _request(sim, "POST", "/api/v1/models/load", {"model": "qwen/qwen3-4b", "context_length": 8192})
    assert (again["instance_id"], "load_config" in again) == ("qwen/qwen3-4b:2", False)
    _, listed = _request(sim, "GET", "/api/v1/models")
    qwen = next(m for m in listed["models"] if m["key"] == "qwen/qwen3-4b")
    assert [(i["id"], i["config"]["context_length"]) for i in qwen["loaded_instances"]] == [
        ("qwen/qwen3-4b", 4096),
        ("qwen/qwen3-4b:2", 8192),
    ]
    assert _request(sim, "POST", "/api/v1/models/unload", {"instance_id": "qwen/qwen3-4b:2"}) == (
        200,
        {"instance_id": "qwen/qwen3-4b:2"},
    )
    assert _request(sim, "POST", "/api/v1/models/unload", {"instance_id": "qwen/qwen3-4b:2"})[0] == 404
    assert _request(sim, "POST", "/api/v1/models/download", {"model": "openai/gpt-oss-20b"}) == (
        200,
        {"status": "already_downloaded"},
    )
    status, job = _request(sim, "POST", "/api/v1/models/download", {"model": "ibm/granite-4-micro"})
    assert (status, job["status"], set(job)) == (
        200,
        "downloading",
        {"job_id", "status", "total_size_bytes", "started_at"},
    )

    def completed() -> bool:
        return bool(_request(sim, "GET", f"/api/v1/models/download/status/{job['job_id']}")[1]["status"] == "completed")

    assert eventually(completed)
    _, done = _request(sim, "GET", f"/api/v1/models/download/status/{job['job_id']}")
    assert (done["downloaded_bytes"], "completed_at" in done) == (done["total_size_bytes"], True)
    assert "ibm/granite-4-micro" in {m["modelKey"] for m in json.loads(sim.lms("ls", "--json").stdout)}


def test_rest_v1_load_failure_is_model_load_failed(sim: SimInstall) -> None:
    """BT#2295: a failed REST load answers an error with code model_load_failed and LM Studio's cause."""
    up(sim, "server")
    sim.fail_load("qwen/qwen3-4b")
    status, body = _request(sim, "POST", "/api/v1/models/load", {"model": "qwen/qwen3-4b"})
    assert (status, body["error"]["code"], "insufficient system resources" in body["error"]["message"]) == (
        500,
        "model_load_failed",
        True,
    )


def test_api_token_mode(make_sim: Any) -> None:
    """facts §4: with a token set, requests without it or with a wrong one get 401 invalid_api_key;
    the greeting stays open (lms probes it without a token) and the right token passes."""
    token = "sk-lm-Abcd1234:Abcdefghij0123456789"
    sim = make_sim(api_token=token)
    up(sim, "server")  # `lms server start` verifies through the greeting
    missing = _request(sim, "GET", "/api/v1/models")
    wrong = _request(sim, "GET", "/v1/models", token="sk-lm-Abcd1234:Xbcdefghij0123456789")  # noqa: S106
    malformed = _request(sim, "POST", "/v1/chat/completions", {"model": "qwen/qwen3-4b"}, token="nope")  # noqa: S106
    for status, body in (missing, wrong, malformed):
        assert (status, body["error"]["code"], body["error"]["type"]) == (401, "invalid_api_key", "invalid_request")
    assert missing[1]["error"]["message"].startswith("An LM Studio API token is required")
    assert malformed[1]["error"]["message"].startswith("Malformed LM Studio API token provided: nope")
    assert _get(sim, "/lmstudio-greeting") == (200, {"lmstudio": True})
    assert _request(sim, "GET", "/api/v1/models", token=token)[0] == 200


@pytest.mark.parametrize(
    ("profile", "quote", "code"), [("0.4", "'lms load'", None), ("0.3.31", "`lms load`", "model_not_found")]
)
def test_no_models_loaded_wording_by_version(make_sim: Any, profile: str, quote: str, code: str | None) -> None:
    """facts §4: "No models loaded" quotes `lms load` with code model_not_found on 0.3 (lms#107),
    'lms load' with code null on 0.4 (BT#1730)."""
    sim = make_sim(profile=profile, server_config={"justInTimeModelLoading": False})
    up(sim, "server")
    status, body = _request(sim, "POST", "/v1/chat/completions", {"model": "x", "messages": []})
    assert (status, quote in body["error"]["message"], body["error"]["code"]) == (404, True, code)


# -- what the real lms showed (facts §9) ------------------------------------------------
def lms_with(sim: SimInstall, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The simulated `lms` with ``env`` added to the install's environment."""
    return subprocess.run(
        [str(sim.lms_path), *args], env={**sim.env(), **env}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("profile", ["0.4", "0.3.31", "0.3-cmdts"])
def test_help_as_the_real_cli_prints_it(make_sim: Any, profile: str) -> None:
    """facts §9: `load --help` hides --exact and --local; Commander help exits 0, cmd-ts
    help 1; an unknown command with --help prints the root help; Commander colours help
    under FORCE_COLOR even on a pipe, and not with NO_COLOR=1 FORCE_COLOR=0."""
    sim = make_sim(profile=profile)
    cmdts = sim.release.dialect == "cmdts"
    load = lms_with(sim, "load", "--help")
    root = lms_with(sim, "frobnicate", "--help")
    coloured = lms_with(sim, "server", "start", "--help", FORCE_COLOR="1")
    plain = lms_with(sim, "server", "start", "--help", FORCE_COLOR="0", NO_COLOR="1")
    assert (load.returncode, root.returncode, coloured.returncode) == ((1, 1, 1) if cmdts else (0, 0, 0))
    assert ("--exact" in load.stdout, "--local" in load.stdout, "--yes" in load.stdout) == (False, False, True)
    assert re.search(r"can be one of:" if cmdts else r"^Usage: lms \[options\] \[command\]", root.stdout, re.M)
    assert ("\x1b[" in coloured.stdout, "\x1b[" in plain.stdout) == (not cmdts, False)


def test_server_info_path_turns_off_the_wake_up(make_sim: Any) -> None:
    """facts §9: with LMS_API_SERVER_INFO_PATH set, `daemon up` and `server start` never start
    LM Studio (no port scan, no spawn); without it they do."""
    sim = make_sim()
    for args in (("daemon", "up"), ("server", "start")):
        result = lms_with(sim, *args, LMS_API_SERVER_INFO_PATH=str(sim.root / "nonexistent.json"))
        assert (result.returncode, "Failed to start or connect" in result.stderr, sim.daemon_pid()) == (1, True, None)
    assert (sim.lms("daemon", "up").returncode, sim.daemon_pid() is not None) == (0, True)


def test_rejected_passkey_prints_the_cause_before_the_last_error(make_sim: Any) -> None:
    """BT#1566, facts §9: the authentication failure comes first. Shipped builds then print
    `Error: WebSocket connection closed`, exit 1; HEAD (what the real `lms` 07b7252 printed)
    one line per namespace socket with frames, then `Error: Failed to authenticate: ...` and
    exit 1, except `ps`/`unload`, whose promise never settles: no last line, exit 13; and
    `daemon status`, which asks the service, fails too."""
    cause = "Failed to authenticate: Invalid passkey for lms CLI client"
    old = make_sim("old", profile="0.3.31")
    up(old, "server")
    old.reject_cli_passkey()
    result = old.lms("ps", "--json")
    lines = result.stderr.splitlines()
    assert (result.returncode, lines[-1], cause in lines[0]) == (1, "Error: WebSocket connection closed", True)

    head = make_sim("head", profile="0.4")
    up(head, "daemon")
    head.reject_cli_passkey()
    socket_line = re.compile(
        r"^\[LMStudioClient\]\[(Repository|LLM|System)\]\[ClientPort\]\[WsClientTransport:"
        r"AuthenticatedWsClientTransport\] WebSocket error: Error: " + re.escape(cause) + "$"
    )
    for args, code, last in (
        (("ps", "--json"), 13, None),
        (("unload", "--all"), 13, None),
        (("ls", "--json"), 1, f"Error: {cause}"),
        (("daemon", "status", "--json"), 1, f"Error: {cause}"),
        (("server", "start"), 1, f"Error: {cause}"),
    ):
        result = head.lms(*args)
        messages = [ln for ln in result.stderr.splitlines() if not ln.startswith("    at ")]
        assert (result.returncode, result.stdout) == (code, ""), (args, result)
        assert all(socket_line.match(ln) for ln in messages[: -1 if last else None]), (args, messages)
        assert (messages[-1] if last else None) == last, (args, messages)


def test_lm_link_device_is_listed_and_exact_picks_its_copy_without_local(make_sim: Any) -> None:
    """facts §9: an LM Link build lists a linked device's models with its deviceIdentifier
    (this machine's: null); `load --exact` without `--local` picks the remote copy of a path
    both hold, with `--local` this machine's. Builds before LM Link have no such key."""
    sim = make_sim()
    sim.link_device("desk-pc", ["google/gemma-3-1b"], loaded=["google/gemma-3-1b"])
    up(sim, "daemon")
    listed = json.loads(sim.lms("ls", "--json").stdout)
    ps = json.loads(sim.lms("ps", "--json").stdout)
    assert (listed[0]["deviceIdentifier"], {m["deviceIdentifier"] for m in listed[1:]}) == ("desk-pc", {None})
    assert [(m["identifier"], m["deviceIdentifier"]) for m in ps] == [("google/gemma-3-1b", "desk-pc")]
    assert sim.lms("load", GEMMA_PATH, "--exact", "--yes").returncode == 0
    assert sim.loaded() == []  # it went to desk-pc
    assert sim.lms("load", GEMMA_PATH, "--exact", "--yes", "--local").returncode == 0
    assert [m["modelKey"] for m in sim.loaded()] == ["google/gemma-3-1b"]
    old = make_sim(profile="0.3.31")
    up(old, "daemon")
    assert "deviceIdentifier" not in json.loads(old.lms("ls", "--json").stdout)[0]


def test_ls_json_is_what_the_websocket_lists(sim: SimInstall) -> None:
    """The real `lms ls --json` prints the service's ``system.listDownloadedModels`` items
    (07b7252 against the simulator): the simulated `lms` prints the same objects, so an unset
    optional key (an embedding model's ``paramsString``) is absent, not ``null``."""
    up(sim, "daemon")
    printed = json.loads(sim.lms("ls", "--json").stdout)
    key2 = (sim.home / ".internal" / "lms-key-2").read_text().strip()
    with connect(f"ws://127.0.0.1:{sim.api_port}/system", open_timeout=5) as ws:
        ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "lms-cli", "clientPasskey": "<key>" + key2}))
        assert json.loads(ws.recv(timeout=5)) == {"success": True}
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "listDownloadedModels", "callId": 1}))
        listed = json.loads(ws.recv(timeout=10))["result"]
    embedding = next(m for m in printed if m["type"] == "embedding")
    assert (printed, "paramsString" in embedding) == (listed, False)


def test_head_help_has_the_real_layout(make_sim: Any) -> None:
    """On the 0.4 rows the help is laid out as the real `lms` 07b7252 printed it (colours off):
    a description line, three-space indents, options with their short flags and value names
    and no `-h, --help` line; `lms server --help` lists start/stop/status and exits 0."""
    sim = make_sim()
    env = {**sim.env(), "NO_COLOR": "1", "FORCE_COLOR": "0"}

    def help_of(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(sim.lms_path), *args, "--help"], env=env, capture_output=True, text=True, timeout=30, check=False
        )

    daemon, server, start, load = help_of("daemon"), help_of("server"), help_of("server", "start"), help_of("load")
    assert [r.returncode for r in (daemon, server, start, load)] == [0, 0, 0, 0]
    assert daemon.stdout.startswith(
        "Usage: lms daemon [options] [command]\n\nCommands for managing the LM Studio daemon\n\nCommands:\n"
        "   up                Manually start the llmster daemon\n"
        "   down              Manually shutdown the llmster daemon\n"
        "   status            Check the status of the LM Studio daemon\n"
    ), daemon.stdout
    assert re.search(r"^   start {13}Starts the local server$", server.stdout, re.MULTILINE), server.stdout
    assert start.stdout.startswith("Usage: lms server start [options]\n\nStarts the local server\n\nOptions:\n")
    assert re.search(r"^   -p, --port <port> {12}Port to run the server on\.", start.stdout, re.MULTILINE)
    assert re.search(r"^   -c, --context-length <length> +The number", load.stdout, re.MULTILINE), load.stdout
    assert re.search(r"^Arguments:\n   model-key +The model key to load", load.stdout, re.MULTILINE), load.stdout
    assert "--help" not in start.stdout + load.stdout


def test_head_load_draws_its_spinner_on_stdout(make_sim: Any) -> None:
    """The real `lms` 07b7252 draws its load progress on stdout even on a pipe (cursor hidden,
    ``Loading <key> <frame>`` lines, the line cleared and the cursor shown again): stdout of
    `lms load` is not empty and is not JSON; the messages stay on stderr. Older rows print nothing."""
    head, old = make_sim("head"), make_sim("old", profile="0.3.31")
    loaded = head.lms("load", "google/gemma-3-1b", "--yes")  # fuzzy over model keys (066002e)
    assert re.fullmatch(
        r"\x1b\[\?25l(\nLoading google/gemma-3-1b( \d+%)? [\u2800-\u28ff](\x1b\[\?25l)?)+\n\x1b\[K\x1b\[\?25h",
        loaded.stdout,
    )
    assert "Model loaded successfully" in loaded.stderr
    old_load = old.lms("load", GEMMA_PATH, "--exact", "--yes")
    assert (old_load.returncode, old_load.stdout, "Model loaded successfully" in old_load.stderr) == (0, "", True)


def test_status_with_the_server_off_wakes_nothing(sim: SimInstall) -> None:
    """`lms status` checks the server's greeting first and connects only when it answers
    ([lms] status.ts; the real 07b7252 against the simulator): with nothing running it prints
    the OFF hint and starts no daemon; with the server on and nothing loaded, `No Models Loaded`."""
    off = sim.lms("status")
    assert (off.returncode, off.stdout.splitlines()[0], sim.daemon_pid()) == (0, "Server:  OFF ", None)
    up(sim, "server")
    on = sim.lms("status")
    assert on.stdout == f"Server: ON (port: {sim.http_port})\n\nNo Models Loaded\n"
