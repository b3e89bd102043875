"""The simulator's websocket API through LM Studio's official JS SDK (``@lmstudio/sdk`` from npm).

Issue 15 item 3: a tool author's program (``js/sdk_program.mjs``: ``new LMStudioClient(
{baseUrl})``, ``client.llm.model(key)``, ``model.respond``, ``model.act`` with one tool)
runs under Node against the simulator, and against a crash that a real `lmsupervisor run`
repairs. ``.ci/run`` installs the pinned SDK with ``npm ci`` in ``tests/integration/js``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_run import Running

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(NODE is None, reason="node is not on PATH: the @lmstudio/sdk tests need Node 20"),
    pytest.mark.skipif(
        not (JS_DIR / "node_modules" / "@lmstudio" / "sdk").is_dir(),
        reason="@lmstudio/sdk is not installed: run `npm ci` in tests/integration/js (.ci/run does)",
    ),
]

QWEN = "qwen/qwen3-4b"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
QWEN_ONLY = '\n[[models]]\nkey = "qwen/qwen3-4b"\nidentifier = "qwen"\n'


def program(sim: SimInstall, *extra: str) -> list[str]:
    """The command line of the SDK program against ``sim``'s HTTP port."""
    return [str(NODE), "sdk_program.mjs", f"ws://127.0.0.1:{sim.http_port}", QWEN, *extra]


def run_program(sim: SimInstall) -> tuple[int, dict[str, Any]]:
    """Run the program to its end: exit code and its JSON line."""
    done = subprocess.run(program(sim), cwd=JS_DIR, capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip(), done.stderr[-3000:]
    assert "Received invalid" not in done.stderr, done.stderr[-3000:]  # the SDK's zod rejections
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return done.returncode, found


def test_respond_and_act_with_one_tool_call(sim: SimInstall) -> None:
    """`model(key)` loads JIT (as `lms ps` shows), `respond` answers, `act` calls the tool once with
    schema-built arguments and ends with an answer quoting its result, in two rounds; the
    listings and an embedding pass the SDK's zod schemas (else its calls never resolve)."""
    assert sim.lms("server", "start").returncode == 0
    code, out = run_program(sim)
    listed = [m["modelKey"] for m in json.loads(sim.lms("ls", "--json").stdout)]
    assert (code, out) == (
        0,
        {
            "reply": f"Simulated reply from {QWEN}.",
            "calls": [{"a": 1.5, "b": 1.5}],
            "final": f"Simulated reply from {QWEN}. The tool returned: 3",
            "rounds": 2,
            "loaded": [QWEN],
            "downloaded": listed,
            "dimensions": 768,
        },
    )
    assert sorted(m["identifier"] for m in sim.loaded()) == [QWEN, NOMIC]


def test_a_crash_is_the_sdks_error_and_run_brings_it_back(sim: SimInstall, start: Callable[..., Running]) -> None:
    """kill -9 between `respond` and `act`: the SDK fails with its own connection error;
    after `lmsupervisor run` brings LM Studio back, the same program works on the supervisor's model."""
    assert sim.lms("server", "start").returncode == 0
    with subprocess.Popen(
        program(sim, "pause"),
        cwd=JS_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first == {"phase": "responded", "reply": f"Simulated reply from {QWEN}."}
        sim.crash_and_wait()
        out, err = proc.communicate("go\n", timeout=60)
    failed = json.loads(out.strip().splitlines()[-1])
    # Which one depends on whether the close reached the SDK before `act` sent (it then reconnects).
    expected = ("WebSocket connection closed", f"connect ECONNREFUSED 127.0.0.1:{sim.http_port}")
    assert (proc.returncode, failed["name"], failed["error"] in expected) == (2, "Error", True), (failed, err[-3000:])
    run = start(sim, extra=QWEN_ONLY)
    run.wait_state("ready")
    code, again = run_program(sim)
    assert (code, again["reply"], again["rounds"]) == (0, "Simulated reply from qwen.", 2)
