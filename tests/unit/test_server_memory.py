"""lmsupervisor's own server.json: read back as LM Studio's own settings are checked, and
never a reason to fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lmsupervisor.core.observed import ServerSettings
from lmsupervisor.supervisor import ServerMemory


def test_what_save_writes_load_reads(tmp_path: Path) -> None:
    """A round trip keeps port, bind and CORS."""
    memory = ServerMemory(tmp_path / "server.json")
    memory.save(ServerSettings(port=4321, bind="::1", cors=True, found=True))
    assert ServerSettings(port=4321, bind="::1", cors=True, found=True) == memory.load()


def test_a_bracketed_bind_is_read_normalised(tmp_path: Path) -> None:
    """A bind written as ``[::1]`` comes back as LM Studio binds it, ``::1``."""
    (tmp_path / "server.json").write_text(json.dumps({"port": 1234, "bind": "[::1]", "cors": False}))
    loaded = ServerMemory(tmp_path / "server.json").load()
    assert (loaded.bind if loaded else None) == "::1"


def test_no_file_is_nothing_remembered_and_no_warning(tmp_path: Path) -> None:
    """The first run has no server.json: None, quietly."""
    with capture_logs() as logs:
        assert ServerMemory(tmp_path / "server.json").load() is None
    assert logs == []


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"port": 99999, "bind": "127.0.0.1", "cors": false}', "port"),
        ('{"port": true, "bind": "127.0.0.1", "cors": false}', "port"),
        ('{"port": "1234", "bind": "127.0.0.1", "cors": false}', "port"),
        ('{"port": 1234, "bind": "localhost:1234", "cors": false}', "bind"),
        ('{"port": 1234, "bind": 7, "cors": false}', "bind"),
        ('{"port": 1234, "bind": "127.0.0.1", "cors": "yes"}', "cors"),
        ('{"port": 1234, "bind": "127.0.0.1"}', "cors"),
        ("[1234]", "JSON object"),
        ("{port: 12", "JSON"),
    ],
)
def test_an_unusable_file_is_ignored_and_logged(tmp_path: Path, text: str, named: str) -> None:
    """A value :meth:`ServerMemory.save` would never write: nothing is remembered (LM
    Studio's settings or defaults apply), and ``server_memory_ignored`` names what is wrong."""
    (tmp_path / "server.json").write_text(text)
    with capture_logs() as logs:
        assert ServerMemory(tmp_path / "server.json").load() is None
    assert [(e["event"], named in e["error"]) for e in logs] == [("server_memory_ignored", True)]
