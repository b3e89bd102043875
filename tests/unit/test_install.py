"""Install detection: the home as LM Studio resolves it, lms, bootstrap, settings, layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmsupervisor.core.observed import effective_server, usable_server
from lmsupervisor.core.problems import Problem
from lmsupervisor.lmstudio.homedir import resolve_home
from lmsupervisor.lmstudio.install import Platform, detect, read_server_settings
from lmsupervisor.simulator import common
from lmsupervisor.simulator.home import create_install


def linux(root: Path, path: str = "/usr/bin") -> Platform:
    return Platform("linux", root, {"PATH": path})


def codes(install: object) -> set[str]:
    return {p.code for p in install.problems}  # type: ignore[attr-defined]


def test_home_pointer_wins(tmp_path: Path) -> None:
    """Rule 1: the pointer file's trimmed content is the home, even if others exist."""
    (tmp_path / ".cache" / "lm-studio").mkdir(parents=True)
    (tmp_path / ".lmstudio-home-pointer").write_text("  /srv/lms-home\n")
    assert resolve_home(tmp_path).home == Path("/srv/lms-home")


def test_home_legacy_cache_before_default(tmp_path: Path) -> None:
    """Rule 2: without a pointer, an existing ~/.cache/lm-studio is the home."""
    (tmp_path / ".cache" / "lm-studio").mkdir(parents=True)
    (tmp_path / ".lmstudio").mkdir()
    assert (resolve_home(tmp_path).home, resolve_home(tmp_path).source) == (tmp_path / ".cache" / "lm-studio", "legacy")


def test_home_default(tmp_path: Path) -> None:
    """Rule 3: otherwise ~/.lmstudio; an empty pointer file is reported and skipped."""
    (tmp_path / ".lmstudio-home-pointer").write_text("\n")
    res = resolve_home(tmp_path)
    assert (res.home, res.source, res.pointer_error is not None) == (tmp_path / ".lmstudio", "default", True)


# Facts §1's cases: the folders under the user's home, and the pointer file's text (None: no file).
HOME_CASES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "pointer-wins": ((".cache/lm-studio", ".lmstudio"), "  /srv/lms-home\n"),
    "cache-before-default": ((".cache/lm-studio", ".lmstudio"), None),
    "cache": ((".cache/lm-studio",), None),
    "default": ((), None),
}


@pytest.mark.parametrize("linked", [False, True], ids=["home", "home-is-a-symlink"])
@pytest.mark.parametrize(("folders", "pointer"), HOME_CASES.values(), ids=list(HOME_CASES))
def test_the_simulator_and_the_supervisor_find_the_same_home(
    tmp_path: Path, folders: tuple[str, ...], pointer: str | None, linked: bool
) -> None:
    """The simulator's own reading of facts §1 (``common.find_home``, the oracle) and the
    supervisor's (``resolve_home``) agree on every case of the sheet, also when the user's home
    is a symlink (the pointer is read in its realpath): a change to one shows here."""
    real = tmp_path / "real"
    real.mkdir()
    for folder in folders:
        (real / folder).mkdir(parents=True)
    if pointer is not None:
        (real / common.POINTER_FILE).write_text(pointer)
    user_home = real
    if linked:
        user_home = tmp_path / "link"
        user_home.symlink_to(real)
    found = resolve_home(user_home)
    assert (found.home, found.source == "pointer") == common.find_home(user_home)


def test_the_pointer_the_simulator_writes_is_the_home_the_supervisor_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a pointer file the simulated LM Studio writes one naming the home it chose
    (facts §1); the supervisor then finds that home through the pointer."""
    (tmp_path / ".cache" / "lm-studio").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    home = common.lmstudio_home()
    found = resolve_home(tmp_path)
    assert (home, found.home, found.source) == (tmp_path / ".cache" / "lm-studio", home, "pointer")


def test_nothing_installed(tmp_path: Path) -> None:
    """An empty HOME: not installed, with the download fix, and no other noise."""
    found = detect(linux(tmp_path))
    assert (found.installed, codes(found)) == (False, {"not_installed"})
    assert "https://lmstudio.ai/download" in found.problems[0].fix


def test_linux_llmster_install(tmp_path: Path) -> None:
    """A bootstrapped 0.4 install: lms in the home, llmster from its install-location file."""
    sim = create_install(tmp_path)
    found = detect(linux(sim.root))
    assert (found.installed, found.bootstrapped, found.kind, found.lms, found.lms_source) == (
        True,
        True,
        "llmster",
        sim.lms_path,
        "home",
    )
    assert (found.server.port, found.server.bind, found.server.cors, found.server.jit) == (
        sim.http_port,
        "127.0.0.1",
        False,
        True,
    )
    assert (found.local_service_enabled, found.problems) == (True, ())


def test_lms_on_path_preferred_and_counts_as_bootstrapped(tmp_path: Path) -> None:
    """lms on PATH is found there; bin on PATH is bootstrapped even without an rc line."""
    sim = create_install(tmp_path, bootstrapped=False)
    found = detect(linux(sim.root, f"/usr/bin:{sim.home / 'bin'}"))
    assert (found.lms_source, found.bootstrapped) == ("PATH", True)


def test_not_bootstrapped(tmp_path: Path) -> None:
    """No rc file names <home>/bin and PATH lacks it: a warning with the bootstrap command."""
    sim = create_install(tmp_path, bootstrapped=False)
    found = detect(linux(sim.root))
    problem = next(p for p in found.problems if p.code == "not_bootstrapped")
    assert (found.bootstrapped, problem.severity) == (False, "warning")
    assert f"{sim.home / 'bin' / 'lms'} bootstrap" in problem.fix


def test_configured_lms_missing_is_not_guessed(tmp_path: Path) -> None:
    """A configured lms path that does not exist is reported, not replaced by another lms."""
    sim = create_install(tmp_path)
    found = detect(linux(sim.root), lms=tmp_path / "nope" / "lms")
    assert (found.lms, "lms_not_found" in codes(found)) == (None, True)


def test_corrupt_settings_become_problems(tmp_path: Path) -> None:
    """Corrupt settings.json and http-server-config.json are problems; defaults stand in."""
    sim = create_install(tmp_path)
    sim.corrupt("settings.json")
    sim.corrupt("http-server-config.json", "{port: 12")
    found = detect(linux(sim.root))
    assert {"settings_corrupt", "server_config_corrupt"} <= codes(found)
    assert (found.server.port, found.server.found, found.local_service_enabled) == (1234, False, None)


def test_server_config_wrong_types(tmp_path: Path) -> None:
    """A port that is not 1..65535 falls back to 1234 with a warning; other odd values are
    ignored, except networkInterface, kept as its JSON text so the bring-up names it
    (server_address_invalid) instead of quietly serving on the default address."""
    internal = tmp_path / ".internal"
    internal.mkdir()
    (internal / "http-server-config.json").write_text(
        json.dumps({"port": "1234", "cors": "yes", "networkInterface": 7, "justInTimeModelLoading": False})
    )
    settings = read_server_settings(tmp_path)
    assert (settings.port, settings.cors, settings.bind, settings.jit) == (1234, False, "7", False)


def test_legacy_cache_home(tmp_path: Path) -> None:
    """~/.cache/lm-studio is detected (rule 2) with a warning that cleaners may wipe it."""
    sim = create_install(tmp_path, legacy_home=True)
    found = detect(linux(sim.root))
    assert (found.home, found.home_source, found.installed) == (tmp_path / ".cache" / "lm-studio", "legacy", True)
    assert "home_in_cache" in codes(found)


def test_preferences_json_read_where_it_exists(tmp_path: Path) -> None:
    """settings.json without enableLocalService: preferences.json's developer key is read."""
    sim = create_install(tmp_path, settings={"enableLocalService": None})
    (sim.home / "preferences.json").write_text('{"developer": {"enableLocalLLMService": false}}')
    assert detect(linux(sim.root)).local_service_enabled is False


@pytest.mark.parametrize(
    ("system", "env", "folder"),
    [
        ("linux", {}, ".config/LM Studio"),
        ("linux", {"XDG_CONFIG_HOME": "{root}/xdg"}, "xdg/LM Studio"),
        ("darwin", {}, "Library/Application Support/LM Studio"),
        ("windows", {"APPDATA": "{root}/AppData/Roaming"}, "AppData/Roaming/LM Studio"),
    ],
)
def test_settings_in_the_apps_folder_are_read(tmp_path: Path, system: str, env: dict[str, str], folder: str) -> None:
    """0.3 keeps settings.json in the app's own folder (Electron userData, facts §2/§9), not
    the home: read there too, so a disabled local service is reported on 0.3 as well."""
    sim = create_install(tmp_path, profile="0.3.31")
    (sim.home / "settings.json").unlink()
    (sim.root / folder).mkdir(parents=True)
    (sim.root / folder / "settings.json").write_text('{"enableLocalService": false}')
    env = {k: v.format(root=sim.root) for k, v in env.items()}
    found = detect(Platform(system, sim.root, {"PATH": "/usr/bin", **env}))
    assert (found.local_service_enabled, "local_service_disabled" in codes(found)) == (False, True)


def test_macos_app_layout(tmp_path: Path) -> None:
    """macOS 0.3 app: found via app-install-location.json; a disabled local service warns."""
    sim = create_install(tmp_path, profile="0.3", layout="darwin", settings={"enableLocalService": False})
    found = detect(Platform("darwin", sim.root, {"PATH": "/usr/bin"}))
    assert found.kind == "app"
    assert found.service_path == sim.root / "Applications" / "LM Studio.app" / "Contents" / "MacOS" / "LM Studio"
    assert "local_service_disabled" in codes(found)


def test_windows_layout_user_path(tmp_path: Path) -> None:
    """Windows: lms.exe, and bootstrap means <home>\\bin in the User PATH (registry)."""
    sim = create_install(tmp_path, layout="windows", bootstrapped=False)
    not_yet = Platform("windows", sim.root, {"PATH": r"C:\Windows"}, windows_user_path=r"C:\Tools")
    done = Platform("windows", sim.root, {"PATH": r"C:\Windows"}, windows_user_path=rf"C:\Tools;{sim.home / 'bin'}")
    assert (detect(not_yet).lms, detect(not_yet).bootstrapped) == (sim.home / "bin" / "lms.exe", False)
    assert detect(done).bootstrapped is True


def test_stale_install_location(tmp_path: Path) -> None:
    """A dangling llmster-install-location.json is an error with its fix, and never falls back
    to the app (lms itself does not, facts §8), even when an app install is recorded too."""
    sim = create_install(tmp_path, profile="0.3.31")  # an app install, recorded
    (sim.home / ".internal" / "llmster-install-location.json").write_text(
        json.dumps({"path": str(tmp_path / "gone" / "llmster"), "argv": [], "cwd": "/"})
    )
    found = detect(linux(sim.root))
    stale = next(p for p in found.problems if p.code == "install_location_stale")
    assert (found.kind, found.service_path, stale.severity) == ("llmster", None, "error")
    assert "does not fall back" in stale.message


def test_appimage_install_is_reported(tmp_path: Path) -> None:
    """An AppImage GUI install (its recorded path is a /tmp/.mount_* of a past run) is reported
    as such with the fix (lms#97, BT#1068), not as a generic stale file."""
    sim = create_install(tmp_path, profile="0.3.31", layout="appimage")
    found = detect(linux(sim.root))
    problem = next(p for p in found.problems if p.code == "appimage_not_startable")
    assert (found.kind, found.installed, problem.severity) == ("appimage", True, "error")
    assert "--appimage-extract" in problem.fix and "install_location_stale" not in codes(found)


def test_windows_home_is_userprofile_before_home(tmp_path: Path) -> None:
    """On Windows the user home is USERPROFILE even where HOME is set (Git Bash, Cygwin:
    LM Studio's os.homedir(), facts §8); elsewhere HOME comes first."""
    env = {"HOME": "/c/Users/me-bash", "USERPROFILE": str(tmp_path / "me")}
    assert Platform.current(env, platform_name="windows").user_home == tmp_path / "me"
    assert Platform.current(env, platform_name="linux").user_home == Path("/c/Users/me-bash")


def test_effective_server_inherits_lmstudio_settings(tmp_path: Path) -> None:
    """Undeclared server settings come from http-server-config.json, declared ones win."""
    sim = create_install(tmp_path, server_config={"cors": True, "networkInterface": "0.0.0.0"})
    found = read_server_settings(sim.home)
    inherited = effective_server(None, None, None, found)
    declared = effective_server("127.0.0.1", 4321, False, found)
    assert (inherited.bind, inherited.cors, inherited.port) == ("0.0.0.0", True, sim.http_port)
    assert (declared.bind, declared.cors, declared.port) == ("127.0.0.1", False, 4321)


@pytest.mark.parametrize(
    ("saved", "usable"),
    [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"), ("LOCALHOST", "localhost"), ("localhost:1234", None),
     ("0.0.0.0 ", None), ("999.1.1.1", None)],
)  # fmt: skip
def test_usable_server_spells_the_bind_or_names_the_problem(tmp_path: Path, saved: str, usable: str | None) -> None:
    """The inherited networkInterface, spelled as an address (ready for a URL), or
    server_address_invalid naming it, the settings file, and the fix."""
    sim = create_install(tmp_path, server_config={"networkInterface": saved})
    install = detect(linux(sim.root), sim.home)
    server = usable_server(effective_server(None, None, None, install.server), install)
    if usable is not None:
        assert not isinstance(server, Problem) and (server.bind, server.port) == (usable, sim.http_port)
        return
    assert isinstance(server, Problem)
    assert (server.code, f"networkInterface {saved!r}" in server.message) == ("server_address_invalid", True)
    assert str(sim.home / ".internal" / "http-server-config.json") in server.message


@pytest.mark.parametrize("declarable", [True, False])
def test_usable_server_suggests_a_declared_bind_only_where_it_helps(tmp_path: Path, declarable: bool) -> None:
    """`[server] bind` is suggested only when this `lms` can pass --bind (facts §8)."""
    sim = create_install(tmp_path, server_config={"networkInterface": "localhost:1234"})
    install = detect(linux(sim.root), sim.home)
    problem = usable_server(install.server, install, declarable=declarable)
    assert isinstance(problem, Problem) and ("declare [server] bind" in problem.fix) is declarable
