"""Strict config parsing: defaults, every error names its TOML key."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsupervisor import config
from lmsupervisor.errors import ConfigError
from tests.conftest import cpu_bound


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


def test_the_shipped_example_states_the_defaults() -> None:
    """Every value the shipped example sets is the default (it documents them, it changes
    nothing), and the top-level copy is the package's own file (a link)."""
    example = Path(config.__file__).with_name("config.example.toml")
    assert config.parse(tomllib.loads(example.read_text())) == config.Config()
    top = Path(config.__file__).parent.parent / "config.example.toml"
    if top.exists():  # a checkout, not an installed wheel
        assert top.resolve() == example.resolve()


def test_start_timeout_allows_a_cold_start_of_the_real_lms() -> None:
    """120 s by default, in the code and the shipped example: a cold `lms daemon up` alone
    may poll for about 60 s before the server starts (facts §9)."""
    example = Path(config.__file__).with_name("config.example.toml")
    shipped = config.parse(tomllib.loads(example.read_text())).server.start_timeout
    assert (config.Config().server.start_timeout, shipped) == (120.0, 120.0)


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
        ("[gpu]\nrequire = 'yes'", "gpu.require", '"auto", true or false'),
        ("[gpu]\nrequire = 1", "gpu.require", '"auto", true or false'),
        ("[gpu]\nwait = -1", "gpu.wait", ">= 0"),
        ("[gpu]\nwait = '3m'", "gpu.wait", "seconds as a number"),
        ("[gpu]\nwiat = 3", "gpu.wiat", "unknown key"),
        ("[lmstudio]\nruntime = 'llama cpp'", "lmstudio.runtime", "name or name@version"),
        ("[lmstudio]\nruntime = 3", "lmstudio.runtime", "a string"),
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
    st.integers(min_value=1, max_value=65535),
    st.booleans(),
    st.floats(min_value=0.001, max_value=3600, allow_nan=False),
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


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[health]\ninterval = nan", "health.interval"),
        ("[health]\ninterval = inf", "health.interval"),
        ("[health]\ninterval = 1e308", "health.interval"),
        ("[health]\ntimeout = nan", "health.timeout"),
        ("[restart]\ninitial_delay = nan", "restart.initial_delay"),
        ("[restart]\nmax_delay = inf", "restart.max_delay"),
        ("[restart]\nmultiplier = inf", "restart.multiplier"),
        ("[restart]\njitter = nan", "restart.jitter"),
        ("[server]\nstart_timeout = -inf", "server.start_timeout"),
        ("[[models]]\nkey = 'a/b'\nttl = inf", "models[0].ttl"),
        ("[[models]]\nkey = 'a/b'\ngpu = nan", "models[0].gpu"),
    ],
)
def test_non_finite_and_huge_numbers_are_rejected(text: str, key: str) -> None:
    """NaN, infinity and absurd durations are errors naming the key (they used to turn timers off)."""
    with pytest.raises(ConfigError) as info:
        parse_toml(text)
    assert (info.value.key, info.value.message.startswith(f"{key}: expected")) == (key, True)


HUGE = 10**400  # a TOML integer no float holds: math.isfinite() and float() raise OverflowError on it

# Every numeric key of the config, with a minimal table around it.
NUMERIC_KEYS = [
    ("server", "port"),
    ("server", "start_timeout"),
    ("health", "interval"),
    ("health", "timeout"),
    ("health", "failures_before_restart"),
    ("health", "answer_interval"),
    ("health", "answer_timeout"),
    ("health", "answer_tokens"),
    ("health", "slow_factor"),
    ("restart", "initial_delay"),
    ("restart", "max_delay"),
    ("restart", "multiplier"),
    ("restart", "jitter"),
    ("restart", "reset_after"),
    ("models", "context_length"),
    ("models", "gpu"),
    ("models", "ttl"),
    ("gpu", "wait"),
]


def _one_number(table: str, key: str, value: int) -> tuple[dict[str, object], str]:
    if table == "models":
        return {"models": [{"key": "a/b", key: value}]}, f"models[0].{key}"
    return {table: {key: value}}, f"{table}.{key}"


@pytest.mark.parametrize(("table", "key"), NUMERIC_KEYS)
@pytest.mark.parametrize("sign", [1, -1])
def test_an_integer_too_large_for_a_float_is_an_error_naming_the_key(table: str, key: str, sign: int) -> None:
    """10**400 (or its negative) in any numeric key: a ConfigError naming the key and the
    integer's length, not an OverflowError and not 401 digits of message."""
    data, path = _one_number(table, key, sign * HUGE)
    with pytest.raises(ConfigError) as info:
        config.parse(data)
    assert (info.value.key, info.value.message.startswith(f"{path}: expected")) == (path, True)
    assert info.value.message.endswith("got an integer of 401 digits"), info.value.message


def test_an_integer_past_pythons_text_limit_is_described_by_its_length() -> None:
    """A hex literal of 5000 digits is read by tomllib but has no decimal text in Python
    (sys.get_int_max_str_digits): the error still names the key, and says how long it is."""
    with pytest.raises(ConfigError) as info:
        parse_toml("[health]\ninterval = 0x" + "f" * 5000)
    assert info.value.message == (
        f"health.interval: expected seconds as a number <= 3600, got an integer of more than "
        f"{sys.get_int_max_str_digits()} digits"
    )


def test_a_decimal_literal_past_pythons_text_limit_is_a_config_error(tmp_path: Path) -> None:
    """tomllib raises a plain ValueError (not TOMLDecodeError) for a decimal integer of more
    than 4300 digits: a ConfigError naming the file, not a traceback."""
    path = tmp_path / "long.toml"
    path.write_text("[health]\ninterval = " + "1" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"long\.toml: not valid TOML \(an integer of more than \d+ digits\)"):
        config.load(path)


@pytest.mark.parametrize(("value", "shown"), [(10**20 - 1, str(10**20 - 1)), (10**20, "an integer of 21 digits")])
def test_integers_are_shown_whole_up_to_twenty_digits(value: int, shown: str) -> None:
    """An integer in a message is shown as written up to 20 digits, longer ones by their length."""
    with pytest.raises(ConfigError) as info:
        config.parse({"server": {"port": value}})
    assert info.value.message.endswith(f"got {shown}")


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, True), (HUGE, True), (-HUGE, True), (1.5, True), (float("nan"), False), (float("inf"), False),
     (True, False), ("1", False)],
    ids=["0", "huge", "-huge", "1.5", "nan", "inf", "true", "text"],
)  # fmt: skip
def test_finite(value: object, ok: bool) -> None:
    """Any int is finite (never converted to a float); NaN, infinities, bools and text are not."""
    assert config.finite(value) is ok


@pytest.mark.parametrize(("value", "parsed"), [("off", "off"), ("max", "max"), (0, 0.0), (1, 1.0), (0.25, 0.25)])
def test_gpu_values(value: object, parsed: object) -> None:
    """gpu is "off", "max" or a ratio from 0.0 to 1.0, kept as a float."""
    assert config.parse({"models": [{"key": "a/b", "gpu": value}]}).models[0].gpu == parsed


@pytest.mark.parametrize("value", [-0.1, 1.5, 100_000, True, "auto"])
def test_gpu_out_of_range_says_what_it_takes(value: object) -> None:
    """Any other gpu value is refused with the one description of what gpu takes."""
    with pytest.raises(ConfigError) as info:
        config.parse({"models": [{"key": "a/b", "gpu": value}]})
    assert info.value.message.startswith('models[0].gpu: expected "off", "max" or a number from 0.0 to 1.0, got ')


def test_deeply_nested_toml_is_a_config_error(tmp_path: Path) -> None:
    """A file nested past Python's recursion limit is a ConfigError, not a RecursionError."""
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deeply"):
        config.load(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[lmstudio]\nhome = "relative/home"', "lmstudio.home"),
        ('[lmstudio]\nlms = "a\\u0000b"', "lmstudio.lms"),
        ('[status]\nsocket = "status.sock"', "status.socket"),
    ],
)
def test_paths_must_be_absolute_text(text: str, key: str) -> None:
    """Relative paths (they would depend on a service's cwd) and NUL bytes are refused by key."""
    with pytest.raises(ConfigError) as info:
        parse_toml(text)
    assert info.value.key == key


def test_reconcile_unload_removed() -> None:
    """[reconcile] unload_removed parses as a bool and defaults to false."""
    assert (parse_toml("").reconcile.unload_removed, parse_toml("[reconcile]\nunload_removed = true").reconcile) == (
        False,
        config.ReconcileConfig(unload_removed=True),
    )


_leaf = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_section = st.dictionaries(
    st.sampled_from(
        ["interval", "timeout", "port", "bind", "cors", "max_delay", "jitter", "key", "ttl", "gpu", "level", "x"]
    ),
    st.one_of(_leaf, st.lists(_leaf, max_size=2)),
    max_size=4,
)
_configs = st.dictionaries(
    st.sampled_from(["lmstudio", "server", "health", "restart", "status", "log", "reconcile", "models", "bogus"]),
    st.one_of(_section, st.lists(_section, max_size=2), _leaf),
    max_size=5,
)


@cpu_bound(3.0)  # 1,000 generated documents
@settings(max_examples=1000, deadline=None)
@given(_configs)
def test_generated_configs_are_accepted_or_rejected_by_key(data: dict[str, object]) -> None:
    """Any TOML-shaped document parses or raises ConfigError with a key; nothing else escapes."""
    error: ConfigError | None = None
    try:
        config.parse(data)
    except ConfigError as exc:
        error = exc
    if error is not None:
        assert error.key, error.message
        assert error.message.startswith(error.key), (error.key, error.message)


def test_restart_kill_app_and_api_token() -> None:
    """kill_app defaults to false; api_token and api_token_file are exclusive, the token is never
    shown by `config show` (to_toml) nor in a repr."""
    cfg = parse_toml('[lmstudio]\napi_token = "sk-lm-abcdefgh:abcdefghij0123456789"\n[restart]\nkill_app = true\n')
    assert (config.Config().restart.kill_app, cfg.restart.kill_app) == (False, True)
    assert config.to_toml(cfg)["lmstudio"]["api_token"] == "(set)"
    assert "sk-lm" not in repr(cfg)
    with pytest.raises(ConfigError, match=r"lmstudio\.api_token_file: set either"):
        parse_toml('[lmstudio]\napi_token = "sk-lm-a"\napi_token_file = "/t"\n')
    with pytest.raises(ConfigError, match=r"restart\.kill_app: expected true or false"):
        parse_toml('[restart]\nkill_app = "yes"\n')
    with pytest.raises(ConfigError, match=r"lmstudio\.api_token"):
        parse_toml('[lmstudio]\napi_token = "two words"\n')


@pytest.mark.parametrize("value", ["not a host", "localhost:99", "localhost:1234", "999.1.1.1", "0.0.0.0 ", "a\n", ""])
def test_a_declared_bind_must_be_an_address(value: str) -> None:
    """`[server] bind` is an IP address or localhost (what LM Studio's server can bind and we can
    reach); anything else is refused naming server.bind, never applied."""
    with pytest.raises(ConfigError) as info:
        parse_toml(f"[server]\nbind = {json.dumps(value)}")
    assert (info.value.key, "server.bind: expected an IP address" in info.value.message) == ("server.bind", True)


@pytest.mark.parametrize(
    ("value", "bound"),
    [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"), ("::1", "::1"), ("[::1]", "::1"), ("LocalHost", "localhost")],
)
def test_a_declared_bind_is_normalised(value: str, bound: str) -> None:
    """IPv6 without brackets (as `lms server start --bind` passes it to Node's listen), localhost in lower case."""
    assert parse_toml(f"[server]\nbind = {json.dumps(value)}").server.bind == bound


def test_config_check_rejects_a_bind_that_is_not_an_address(tmp_path: Path) -> None:
    """`lmsupervisor config check` exits 78 and names server.bind for `bind = "not a host"`."""
    path = tmp_path / "config.toml"
    path.write_text('[server]\nbind = "not a host"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, "server.bind" in proc.stderr + proc.stdout) == (78, True), proc


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1), (1234, 1234), (65535, 65535), (0, None), (65536, None), (-1, None), (True, None), (False, None),
     (1234.0, None), ("1234", None), (None, None)],
)  # fmt: skip
def test_server_port(value: object, expected: int | None) -> None:
    """A port is an integer from 1 to 65535; a boolean (JSON true is 1 to Python) is not one."""
    assert expected == config.server_port(value)


def test_gpu_gate_and_runtime_pin() -> None:
    """``[gpu]`` defaults to require "auto", wait 180 s; true, false and a wait are read as
    given; ``[lmstudio] runtime`` is kept as written, and "" means no pin."""
    assert (config.Config().gpu.require, config.Config().gpu.wait, config.Config().lmstudio.runtime) == (
        "auto",
        180.0,
        None,
    )
    cfg = parse_toml("[gpu]\nrequire = false\nwait = 5\n[lmstudio]\nruntime = 'llama.cpp-cuda@1.52.1'\n")
    assert (cfg.gpu.require, cfg.gpu.wait, cfg.lmstudio.runtime) == (False, 5.0, "llama.cpp-cuda@1.52.1")
    assert parse_toml("[gpu]\nrequire = true\n").gpu.require is True
    assert parse_toml("[lmstudio]\nruntime = ''\n").lmstudio.runtime is None


def test_speed_keys_default_and_are_checked() -> None:
    """``[health] answer_tokens`` (1..4096, default 1), ``slow_factor`` (0 < f <= 1, default
    0.5) and ``[[models]] reload_when_slow`` (default false) parse, and a bad value names its key."""
    default = config.parse({"models": [{"key": "a/b"}]})
    assert (default.health.answer_tokens, default.health.slow_factor, default.models[0].reload_when_slow) == (
        1,
        0.5,
        False,
    )
    cfg = parse_toml(
        '[health]\nanswer_tokens = 16\nslow_factor = 0.25\n[[models]]\nkey = "a/b"\nreload_when_slow = true\n'
    )
    assert (cfg.health.answer_tokens, cfg.health.slow_factor, cfg.models[0].reload_when_slow) == (16, 0.25, True)
    for text, key in (
        ("[health]\nanswer_tokens = 0", "health.answer_tokens"),
        ("[health]\nanswer_tokens = 8.5", "health.answer_tokens"),
        ("[health]\nslow_factor = 0", "health.slow_factor"),
        ("[health]\nslow_factor = 1.5", "health.slow_factor"),
        ('[[models]]\nkey = "a/b"\nreload_when_slow = "yes"', "models[0].reload_when_slow"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_toml(text)
        assert info.value.key == key
