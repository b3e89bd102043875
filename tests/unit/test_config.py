"""Strict config parsing: defaults, every error names its TOML key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmsupervisor import config
from lmsupervisor.errors import ConfigError


def parse_toml(text: str) -> config.Config:
    return config.parse(tomllib.loads(text))


def test_empty_is_all_defaults() -> None:
    """No keys at all is valid and gives the documented defaults."""
    cfg = parse_toml("")
    assert (cfg.health.interval, cfg.restart.max_delay, cfg.server.port, cfg.models) == (5.0, 300.0, None, ())


def test_missing_default_file_is_defaults(tmp_path: Path) -> None:
    """No file at the default location: all defaults; an explicit missing --config is an error."""
    cfg, path = config.load(None, env={"LMSUPERVISOR_CONFIG": str(tmp_path / "none.toml")})
    assert (cfg, path) == (config.Config(), tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "none.toml")


def test_example_config_parses() -> None:
    """The shipped example is a valid config."""
    example = Path(config.__file__).with_name("config.example.toml")
    assert config.parse(tomllib.loads(example.read_text())).health.failures_before_restart == 3


def test_full_model_entry() -> None:
    """A [[models]] entry with every key parses into a ModelConfig."""
    cfg = parse_toml(
        '[[models]]\nkey = "openai/gpt-oss-20b"\nidentifier = "gpt-oss"\n'
        "context_length = 8192\ngpu = 0.5\nttl = 3600\ndownload = true\n"
    )
    assert cfg.models == (config.ModelConfig("openai/gpt-oss-20b", "gpt-oss", 8192, 0.5, 3600.0, True),)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[server]\nprot = 1", "server.prot", "unknown key"),
        ("[[models]]\nkey = 'a'\nttl = '10m'", "models[0].ttl", 'expected seconds as a number, got "10m"'),
        ("[[models]]\nkey = 'a'\n[[models]]\nidentifier = 'b'", "models[1].key", "required"),
        ("[[models]]\nkey = 'a'\ngpu = 'auto'", "models[0].gpu", '"off", "max" or a number'),
        ("[[models]]\nkey = 'a'\ngpu = 1.5", "models[0].gpu", "0.0 to 1.0"),
        ("[[models]]\nkey = 'a'\n[[models]]\nkey = 'a'", "models[1]", "again"),
        ("[server]\nport = 70000", "server.port", "from 1 to 65535"),
        ("[server]\ncors = 'yes'", "server.cors", "true or false"),
        ("[health]\ninterval = 0", "health.interval", "> 0"),
        ("[health]\nfailures_before_restart = true", "health.failures_before_restart", "an integer"),
        ("[restart]\njitter = 1.5", "restart.jitter", "below 1"),
        ("[restart]\ninitial_delay = 10\nmax_delay = 5", "restart.max_delay", ">= restart.initial_delay"),
        ("[log]\nlevel = 'loud'", "log.level", '"debug"'),
        ("models = 3", "models", "an array of tables"),
        ("colour = 1", "colour", "unknown key"),
    ],
)
def test_errors_name_the_key(text: str, key: str, message: str) -> None:
    """Each invalid value raises ConfigError whose key and message name the TOML path."""
    with pytest.raises(ConfigError) as info:
        parse_toml(text)
    assert (info.value.key, message in info.value.message) == (key, True), info.value.message
    assert info.value.message.startswith(key)


def test_load_prefixes_the_file(tmp_path: Path) -> None:
    """Errors from a file name the file, then the key; broken TOML is a ConfigError too."""
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = 'x'\n")
    with pytest.raises(ConfigError, match=r"c\.toml: server\.port: expected an integer"):
        config.load(path)
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(path)


@given(
    st.integers(min_value=1, max_value=65535), st.booleans(), st.floats(min_value=0.001, max_value=1e6, allow_nan=False)
)
def test_valid_values_round_trip(port: int, cors: bool, interval: float) -> None:
    """Any valid port, CORS flag and interval survives parse -> to_toml -> parse."""
    cfg = config.parse({"server": {"port": port, "cors": cors}, "health": {"interval": interval}})
    assert config.parse(config.to_toml(cfg)) == cfg


def test_socket_path_precedence(tmp_path: Path) -> None:
    """--socket, then $LMSUPERVISOR_SOCKET, then status.socket, then $XDG_RUNTIME_DIR."""
    cfg = parse_toml(f"[status]\nsocket = '{tmp_path / 'c.sock'}'")
    env = {"LMSUPERVISOR_SOCKET": str(tmp_path / "e.sock"), "XDG_RUNTIME_DIR": str(tmp_path)}
    assert config.socket_path(cfg, tmp_path / "a.sock", env) == tmp_path / "a.sock"
    assert config.socket_path(cfg, None, env) == tmp_path / "e.sock"
    assert config.socket_path(cfg, None, {"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "c.sock"
    assert config.socket_path(config.Config(), None, {"XDG_RUNTIME_DIR": str(tmp_path)}) == (
        tmp_path / "lmsupervisor" / "status.sock"
    )
