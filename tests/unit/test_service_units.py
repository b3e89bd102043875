"""The Task Scheduler XML, the launchd plist and the schtasks/launchctl command lines we
render, checked against those tools' rules (:mod:`tests.service_units`); and each rule shown
to catch a unit or command line broken in just that way."""

from __future__ import annotations

import plistlib
from collections.abc import Callable

import pytest

from lmsupervisor.service.install import _encode
from lmsupervisor.service.render import Plan, Target, render
from tests.service_units import duration_seconds, launchctl_usage, plist_problems, schtasks_usage, task_xml_problems

# values that need escaping or quoting: an ampersand in the name, spaces in the paths
WINDOWS = {
    scope: Target(
        "windows",
        scope,
        ("C:\\Program Files\\Py & Co\\Scripts\\lmsupervisorw.exe",),
        "PC\\Ann & Bo",
        "C:\\Users\\Ann & Bo",
        config="C:\\Users\\Ann & Bo\\my config.toml",
    )
    for scope in ("user", "system")
}
DARWIN = {
    scope: Target(
        "darwin",
        scope,
        ("/Users/ann/Library/Application Support/pipx/venvs/lmsupervisor/bin/python", "-m", "lmsupervisor"),
        "ann",
        "/Users/ann & bo",
        uid=501,
        group="staff",
        config="/Users/ann & bo/<config>.toml",
    )
    for scope in ("user", "system")
}


def task_bytes(plan: Plan) -> bytes:
    """The task file exactly as the installer writes it."""
    return _encode(plan.files[0])


def shipped_task() -> str:
    return task_bytes(render(WINDOWS["user"])).decode("utf-16")


@pytest.mark.parametrize("scope", ["user", "system"])
def test_the_shipped_task_passes_the_schema_rules(scope: str) -> None:
    """Both tasks (at logon, at boot) pass every rule, with an ampersand and spaces in their values."""
    assert task_xml_problems(task_bytes(render(WINDOWS[scope]))) == []


def utf16(text: str) -> bytes:
    return text.encode("utf-16")


TASK_MUTATIONS: list[tuple[str, Callable[[str], bytes], str]] = [
    ("no BOM", lambda t: t.encode("utf-16-le"), "byte order mark"),
    ("written as UTF-8", lambda t: t.encode("utf-8"), "byte order mark"),
    ("declared UTF-8", lambda t: utf16(t.replace('encoding="UTF-16"', 'encoding="UTF-8"')), "declaration"),
    ("not well-formed", lambda t: utf16(t.replace("Ann &amp; Bo", "Ann & Bo", 1)), "not well-formed"),
    ("foreign namespace", lambda t: utf16(t.replace("2004/02/mit/task", "2004/02/mit/tasks")), "root element Task"),
    ("schema 1.1", lambda t: utf16(t.replace('version="1.2"', 'version="1.1"')), "Task/@version"),
    ("interval under a minute", lambda t: utf16(t.replace("<Interval>PT1M<", "<Interval>PT30S<")), "minimum PT1M"),
    ("interval over 31 days", lambda t: utf16(t.replace("<Interval>PT1M<", "<Interval>P32D<")), "maximum P31D"),
    ("interval in seconds", lambda t: utf16(t.replace("<Interval>PT1M<", "<Interval>60<")), "xs:duration"),
    ("count over 999", lambda t: utf16(t.replace("<Count>999<", "<Count>1000<")), "Count: expected an integer"),
    ("count 0", lambda t: utf16(t.replace("<Count>999<", "<Count>0<")), "Count: expected an integer from 1"),
    ("count missing", lambda t: utf16(t.replace("<Count>999</Count>", "")), "Count: missing"),
    ("no time limit as 0", lambda t: utf16(t.replace(">PT0S<", ">0<")), "ExecutionTimeLimit: expected an xs:duration"),
    ("priority 11", lambda t: utf16(t.replace("<Priority>5<", "<Priority>11<")), "Priority: expected an integer"),
    ("boolean True", lambda t: utf16(t.replace("<Hidden>false<", "<Hidden>False<")), "Hidden: expected true"),
    (
        "unknown policy",
        lambda t: utf16(t.replace(">IgnoreNew<", ">Ignore<")),
        "MultipleInstancesPolicy: expected one of",
    ),
    (
        "unknown setting",
        lambda t: utf16(t.replace("<Hidden>", "<RestartCount>3</RestartCount><Hidden>")),
        "Settings/RestartCount: not an element",
    ),
    (
        "setting twice",
        lambda t: utf16(t.replace("<Hidden>", "<Enabled>true</Enabled><Hidden>")),
        "Settings/Enabled: given twice",
    ),
    ("unknown logon type", lambda t: utf16(t.replace(">InteractiveToken<", ">Interactive<")), "LogonType"),
    ("unknown run level", lambda t: utf16(t.replace(">LeastPrivilege<", ">Highest<")), "RunLevel"),
    ("context of no principal", lambda t: utf16(t.replace('Context="Author"', 'Context="User"')), "Actions/@Context"),
    ("no command", lambda t: utf16(t.replace("<Command>", "<!--").replace("</Command>", "-->")), "Command: missing"),
    ("no actions", lambda t: utf16(t[: t.index("  <Actions")] + "</Task>\n"), "Task/Actions: missing"),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), TASK_MUTATIONS, ids=[m[0] for m in TASK_MUTATIONS])
def test_each_task_rule_catches_its_break(name: str, mutate: Callable[[str], bytes], expected: str) -> None:
    """A task broken in one way is refused for that reason, among few others."""
    problems = task_xml_problems(mutate(shipped_task()))
    assert any(expected in p for p in problems), problems
    assert len(problems) <= 2, problems


def test_durations() -> None:
    """xs:duration in seconds; what is no duration is None."""
    assert [duration_seconds(d) for d in ("PT0S", "PT1M", "P31D", "P1DT1H", "PT1.5S")] == [0, 60, 2678400, 90000, 1.5]
    assert [duration_seconds(d) for d in ("P", "PT", "60", "1M", "PT1H1D", "")] == [None] * 6


# -- launchd ----------------------------------------------------------------------------------
def shipped_job(scope: str = "user") -> dict[str, object]:
    job: dict[str, object] = plistlib.loads(render(DARWIN[scope]).files[0].content.encode())
    return job


@pytest.mark.parametrize("scope", ["user", "system"])
def test_the_shipped_plist_passes_key_by_key(scope: str) -> None:
    """The agent and the daemon pass, and carry each key launchd.plist(5) documents with the
    value lmsupervisor needs."""
    plan = render(DARWIN[scope])
    label = plan.unit.rsplit("/", 1)[-1]
    assert plist_problems(plan.files[0].content.encode(), label) == []
    job = shipped_job(scope)
    assert plan.files[0].path.endswith(f"/{label}.plist")
    assert job["Label"] == label
    assert job["ProgramArguments"] == [*DARWIN[scope].program, "run", "--config", "/Users/ann & bo/<config>.toml"]
    assert (job["KeepAlive"], job["RunAtLoad"], job["AbandonProcessGroup"]) == (True, True, True)
    assert (job["ProcessType"], job["ThrottleInterval"]) == ("Standard", 5)
    log = "/Users/ann & bo/Library/Logs/lmsupervisor/lmsupervisor.log"
    assert (job["StandardOutPath"], job["StandardErrorPath"]) == (log, log)
    assert ("UserName" in job, "GroupName" in job) == ((scope == "system",) * 2)


def replaced(**changes: object) -> bytes:
    job = shipped_job()
    for key, value in changes.items():
        if value is None:
            job.pop(key)
        else:
            job[key] = value
    return plistlib.dumps(job)


def misspelt() -> bytes:
    job = shipped_job()
    job["KeepAlvie"] = job.pop("KeepAlive")
    return plistlib.dumps(job)


PLIST_MUTATIONS: list[tuple[str, Callable[[], bytes], str]] = [
    ("not a plist", lambda: b"<plist><dict><key>Label</key>", "not a property list"),
    ("misspelt key", misspelt, "KeepAlvie: not a launchd.plist(5) key"),
    ("no label", lambda: replaced(Label=None), "Label: missing"),
    ("another label", lambda: replaced(Label="org.other"), "the service target name"),
    ("relative program", lambda: replaced(ProgramArguments=["lmsupervisor", "run"]), "no absolute path"),
    ("no program", lambda: replaced(ProgramArguments=None), "ProgramArguments: expected a non-empty array"),
    ("keepalive only after exit 0", lambda: replaced(KeepAlive={"SuccessfulExit": True}), "restart after every"),
    ("keepalive only after a failure", lambda: replaced(KeepAlive={"SuccessfulExit": False}), "restart after every"),
    ("keepalive only after a crash", lambda: replaced(KeepAlive={"Crashed": True}), "restart after every"),
    ("keepalive condition misspelt", lambda: replaced(KeepAlive={"Crash": True}), "KeepAlive/Crash: not a KeepAlive"),
    ("keepalive condition a string", lambda: replaced(KeepAlive={"Crashed": "yes"}), "KeepAlive/Crashed: expected"),
    ("keepalive a string", lambda: replaced(KeepAlive="true"), "KeepAlive: expected a boolean"),
    ("run at load off", lambda: replaced(RunAtLoad=False), "RunAtLoad: expected true"),
    ("process group killed", lambda: replaced(AbandonProcessGroup=False), "AbandonProcessGroup: expected true"),
    ("process group default", lambda: replaced(AbandonProcessGroup=None), "AbandonProcessGroup: expected true"),
    ("background", lambda: replaced(ProcessType="Background"), "throttles LM Studio"),
    ("unknown process type", lambda: replaced(ProcessType="Normal"), "ProcessType: expected one of"),
    ("relative log", lambda: replaced(StandardErrorPath="lmsupervisor.log"), "StandardErrorPath: expected an absolute"),
    ("no log", lambda: replaced(StandardOutPath=None), "StandardOutPath: expected an absolute"),
    ("throttle a string", lambda: replaced(ThrottleInterval="5"), "ThrottleInterval: expected an integer"),
    ("throttle a boolean", lambda: replaced(ThrottleInterval=True), "ThrottleInterval: expected an integer"),
    ("throttle 0", lambda: replaced(ThrottleInterval=0), "respawns without a pause"),
    ("environment a number", lambda: replaced(EnvironmentVariables={"N": 1}), "every value must be a string"),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), PLIST_MUTATIONS, ids=[m[0] for m in PLIST_MUTATIONS])
def test_each_plist_rule_catches_its_break(name: str, mutate: Callable[[], bytes], expected: str) -> None:
    """A job broken in one way is refused for that reason, among few others."""
    problems = plist_problems(mutate(), "org.lmsupervisor.agent")
    assert any(expected in p for p in problems), problems
    assert len(problems) <= 2, problems


# -- command lines ----------------------------------------------------------------------------
@pytest.mark.parametrize("platform", ["windows", "darwin"])
@pytest.mark.parametrize("scope", ["user", "system"])
def test_every_rendered_command_line_is_documented_syntax(platform: str, scope: str) -> None:
    """Install, restart, uninstall and query: each command line the plans hold is one the tool documents."""
    plan = render((WINDOWS if platform == "windows" else DARWIN)[scope])
    usage = schtasks_usage if platform == "windows" else launchctl_usage
    commands = [*plan.start, *plan.restart, *plan.stop, plan.query, *plan.reload]
    assert {argv[0] for argv in commands} == {"schtasks" if platform == "windows" else "launchctl"}
    assert {" ".join(argv): usage(list(argv[1:])) for argv in commands} == {" ".join(argv): [] for argv in commands}


SCHTASKS_GOOD = [
    "/Create /TN t /XML C:\\t.xml /F",
    "/create /tn t /sc ONLOGON /tr C:\\x.exe",
    "/Run /TN t",
    "/End /TN t",
    "/Delete /TN t /F",
    "/Query /TN t /V /FO LIST",
    "/query /tn t /fo csv /v /nh",
    "/Query /TN t /XML",
    "/Query /TN t /XML ONE",
]
SCHTASKS_BAD = [
    ("/Create /XML C:\\t.xml /F", "/TN taskname is required"),
    ("/Create /TN t /XML C:\\t.xml /SC ONLOGON", "not allowed with it"),
    ("/Create /TN t /F", "needs /XML xmlfile"),
    ("/Run /TN", "needs a value"),
    ("/Run /TN /F", "needs a value"),
    ("/Delete /TN t /Y", "not a switch of /DELETE"),
    ("/End /TN t /F", "not a switch of /END"),
    ("/Stop /TN t", "operation: expected one of"),
    ("/Query /TN t /XML /V", "/FO, /V and /NH are not allowed"),
    ("/Query /TN t /FO XML", "expected TABLE, LIST or CSV"),
    ("/Query /TN t /NH /FO LIST", "only with /FO TABLE or CSV"),
    ("/Run /TN t /TN u", "given twice"),
]


def test_schtasks_usage() -> None:
    """Documented schtasks command lines pass (switches in any case); each kind of bad one is named."""
    assert {c: schtasks_usage(c.split()) for c in SCHTASKS_GOOD} == {c: [] for c in SCHTASKS_GOOD}
    for command, expected in SCHTASKS_BAD:
        problems = schtasks_usage(command.split())
        assert any(expected in p for p in problems), (command, problems)


LAUNCHCTL_GOOD = [
    "bootstrap gui/501 /Users/a/Library/LaunchAgents/org.x.plist",
    "bootstrap system /Library/LaunchDaemons/org.x.plist",
    "bootout gui/501/org.x",
    "bootout gui/501 /Users/a/Library/LaunchAgents/org.x.plist",
    "enable gui/501/org.x",
    "kickstart -k gui/501/org.x",
    "kickstart system/org.x",
    "print gui/501/org.x",
    "print gui/501",
]
LAUNCHCTL_BAD = [
    "load -w /Users/a/Library/LaunchAgents/org.x.plist",
    "unload /Users/a/Library/LaunchAgents/org.x.plist",
    "bootstrap gui/501",
    "bootstrap gui/alice /Users/a/Library/LaunchAgents/org.x.plist",
    "bootstrap gui/501/org.x /Users/a/Library/LaunchAgents/org.x.plist",
    "bootout gui/501/org.x /Users/a/Library/LaunchAgents/org.x.plist",
    "enable gui/501",
    "kickstart -k org.x",
    "print",
]


def test_launchctl_usage() -> None:
    """launchctl(1)'s domain and service targets pass; legacy subcommands and malformed targets do not."""
    assert {c: launchctl_usage(c.split()) for c in LAUNCHCTL_GOOD} == {c: [] for c in LAUNCHCTL_GOOD}
    assert [c for c in LAUNCHCTL_BAD if not launchctl_usage(c.split())] == []
