"""The rules Windows' Task Scheduler and macOS' launchd apply to our units and command lines,
checked on Linux where neither tool exists.

- :func:`task_xml_problems`: a task file as ``schtasks /Create /XML`` reads it: UTF-16 with
  a BOM, the task namespace, the elements and values of the Task Scheduler schema
  (taskschd, schema 1.2+) that our task uses, with their ranges (``RestartOnFailure``:
  ``Interval`` ``PT1M``..``P31D``, ``Count`` 1..999; ``ExecutionTimeLimit`` a duration,
  ``PT0S`` for none; ``Priority`` 0..10; one ``Principal`` that ``Actions/@Context`` names).
- :func:`plist_problems`: a job as launchd reads it (launchd.plist(5)), key by key: every
  key one launchd knows (it ignores an unknown one, such as a misspelt ``KeepAlive``,
  without a word), each of the documented type, plus what lmsupervisor needs of its job
  (restarted whenever it exits, LM Studio left alive, not throttled, logs kept).
- :func:`schtasks_usage` and :func:`launchctl_usage`: a command line against the tools'
  documented syntax (``schtasks /?`` per operation; launchctl(1)'s subcommands and targets).

Each returns a list of problems (empty: accepted), each naming the element, key or switch.
Sources: service-facts.md; Microsoft's Task Scheduler schema pages (``restartType``:
``Interval`` minInclusive ``PT1M``, maxInclusive ``P31D``; ``Count`` minInclusive 1; the
published XSD types ``Count`` as ``unsignedByte``, while Task Scheduler's own restart
setting goes up to 999, the limit service-facts.md gives) and ``schtasks`` reference;
launchd.plist(5) and launchctl(1). Used by the unit tests and by the fake ``schtasks`` and
``launchctl`` (:mod:`tests.fake_service_tool`), which refuse what the real tools refuse.
"""

from __future__ import annotations

import plistlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

# -- Task Scheduler -------------------------------------------------------------------------
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
TASK_VERSIONS = ("1.2", "1.3", "1.4", "1.5", "1.6")  # 1.2: Vista; LogonTrigger/UserId, S4U
TASK_CHILDREN = {"RegistrationInfo", "Triggers", "Settings", "Data", "Principals", "Actions"}
REGISTRATION = {"URI", "SecurityDescriptor", "Source", "Date", "Author", "Version", "Description", "Documentation"}
SETTINGS_BOOLEANS = {
    "AllowStartOnDemand",
    "RestartOnIdle",
    "DisallowStartIfOnBatteries",
    "StopIfGoingOnBatteries",
    "AllowHardTerminate",
    "StartWhenAvailable",
    "RunOnlyIfNetworkAvailable",
    "Enabled",
    "Hidden",
    "RunOnlyIfIdle",
    "WakeToRun",
    "DisallowStartOnRemoteAppSession",
    "UseUnifiedSchedulingEngine",
    "Volatile",
}
SETTINGS = SETTINGS_BOOLEANS | {
    "MultipleInstancesPolicy",
    "NetworkSettings",
    "IdleSettings",
    "ExecutionTimeLimit",
    "DeleteExpiredTaskAfter",
    "Priority",
    "RestartOnFailure",
    "MaintenanceSettings",
}
IDLE_SETTINGS = {"Duration", "WaitTimeout", "StopOnIdleEnd", "RestartOnIdle"}
INSTANCES_POLICIES = ("Parallel", "Queue", "IgnoreNew", "StopExisting")
PRINCIPAL = {"UserId", "GroupId", "LogonType", "DisplayName", "RunLevel", "ProcessTokenSidType", "RequiredPrivileges"}
LOGON_TYPES = ("S4U", "Password", "InteractiveToken")
RUN_LEVELS = ("LeastPrivilege", "HighestAvailable")
TRIGGERS = {
    "BootTrigger",
    "LogonTrigger",
    "IdleTrigger",
    "TimeTrigger",
    "EventTrigger",
    "CalendarTrigger",
    "RegistrationTrigger",
    "SessionStateChangeTrigger",
}
TRIGGER_COMMON = {"Id", "Enabled", "StartBoundary", "EndBoundary", "ExecutionTimeLimit", "Repetition", "Delay"}
TRIGGER_EXTRA = {"LogonTrigger": {"UserId"}, "BootTrigger": set[str]()}
EXEC = {"Command", "Arguments", "WorkingDirectory"}
MAX_TRIGGERS = 48
MAX_ACTIONS = 32
RESTART_INTERVAL = ("PT1M", "P31D")  # restartType/Interval: minInclusive, maxInclusive
RESTART_COUNT = (1, 999)
PRIORITY = (0, 10)

_DURATION = re.compile(
    r"^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


def duration_seconds(text: str) -> float | None:
    """An ``xs:duration`` (``PT1M``, ``P31D``, ``PT0S``) in seconds (a year 365 days, a
    month 30), None when it is not one."""
    m = _DURATION.match(text)
    if m is None:
        return None
    y, mo, d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return ((((y * 365 + mo * 30 + d) * 24 + h) * 60) + mi) * 60 + s


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(
    elem: ET.Element, allowed: set[str], where: str, problems: list[str], required: tuple[str, ...] = ()
) -> dict[str, ET.Element]:
    """The children of ``elem`` by name; unknown, repeated, foreign-namespace or missing ones are problems."""
    found: dict[str, ET.Element] = {}
    for child in elem:
        name = _local(child.tag)
        if not child.tag.startswith(f"{{{TASK_NS}}}"):
            problems.append(f"{where}/{name}: not in the task namespace {TASK_NS}")
        elif name not in allowed:
            problems.append(f"{where}/{name}: not an element of {where} in the Task Scheduler schema")
        elif name in found:
            problems.append(f"{where}/{name}: given twice (the schema allows it once)")
        found[name] = child
    problems += [f"{where}/{name}: missing (required)" for name in required if name not in found]
    return found


def _boolean(elem: ET.Element | None, where: str, problems: list[str]) -> None:
    if elem is not None and (elem.text or "").strip() not in ("true", "false", "1", "0"):
        problems.append(f"{where}: expected true or false (xs:boolean), got {elem.text!r}")


def _duration(elem: ET.Element | None, where: str, problems: list[str], low: str = "", high: str = "") -> None:
    if elem is None:
        return
    text = (elem.text or "").strip()
    seconds = duration_seconds(text)
    if seconds is None:
        problems.append(f"{where}: expected an xs:duration such as PT1M, got {text!r}")
    elif low and seconds < (duration_seconds(low) or 0):
        problems.append(f"{where}: {text} is below the minimum {low}")
    elif high and seconds > (duration_seconds(high) or 0):
        problems.append(f"{where}: {text} is above the maximum {high}")


def _integer(elem: ET.Element | None, where: str, low: int, high: int, problems: list[str]) -> None:
    if elem is None:
        return
    text = (elem.text or "").strip()
    if not text.isdigit() or not low <= int(text) <= high:
        problems.append(f"{where}: expected an integer from {low} to {high}, got {text!r}")


def _one_of(elem: ET.Element | None, where: str, values: tuple[str, ...], problems: list[str]) -> None:
    if elem is not None and (elem.text or "").strip() not in values:
        problems.append(f"{where}: expected one of {', '.join(values)}, got {elem.text!r}")


def task_xml_problems(data: bytes) -> list[str]:
    """What ``schtasks /Create /XML`` would refuse in the task file ``data`` (its bytes)."""
    if data[:2] not in (b"\xff\xfe", b"\xfe\xff"):
        return ["encoding: expected UTF-16 with a byte order mark (schtasks reads the file as UTF-16)"]
    try:
        text = data.decode("utf-16")
    except UnicodeDecodeError as exc:
        return [f"encoding: not valid UTF-16 ({exc.reason})"]
    problems: list[str] = []
    declared = re.match(r'<\?xml[^>]*encoding="([^"]+)"', text)
    if declared is None or declared.group(1).upper() != "UTF-16":
        problems.append('declaration: expected <?xml version="1.0" encoding="UTF-16"?>')
    try:
        utf8 = text.encode("utf-8").replace(b'encoding="UTF-16"', b'encoding="UTF-8"', 1)
        root = ET.fromstring(utf8)  # noqa: S314 - our own rendering  # noqa: S314 - our own file
    except ET.ParseError as exc:
        return [*problems, f"XML: not well-formed ({exc})"]
    if root.tag != f"{{{TASK_NS}}}Task":
        return [*problems, f"Task: expected the root element Task in {TASK_NS}, got {root.tag}"]
    if root.get("version") not in TASK_VERSIONS:
        problems.append(f"Task/@version: expected one of {', '.join(TASK_VERSIONS)}, got {root.get('version')!r}")
    top = _children(root, TASK_CHILDREN, "Task", problems, required=("Actions",))
    if "RegistrationInfo" in top:
        _children(top["RegistrationInfo"], REGISTRATION, "RegistrationInfo", problems)
    if "Triggers" in top:
        _check_triggers(top["Triggers"], problems)
    if "Settings" in top:
        _check_settings(top["Settings"], problems)
    principal_ids = _check_principals(top["Principals"], problems) if "Principals" in top else set()
    if "Actions" in top:
        _check_actions(top["Actions"], principal_ids, problems)
    return problems


def _check_triggers(triggers: ET.Element, problems: list[str]) -> None:
    if len(triggers) > MAX_TRIGGERS:
        problems.append(f"Triggers: {len(triggers)} triggers, the schema allows {MAX_TRIGGERS}")
    for trigger in triggers:
        name = _local(trigger.tag)
        if name not in TRIGGERS:
            problems.append(f"Triggers/{name}: not a trigger of the Task Scheduler schema")
            continue
        where = f"Triggers/{name}"
        found = _children(trigger, TRIGGER_COMMON | TRIGGER_EXTRA.get(name, set()), where, problems)
        _boolean(found.get("Enabled"), f"{where}/Enabled", problems)
        _duration(found.get("Delay"), f"{where}/Delay", problems)


def _check_settings(settings: ET.Element, problems: list[str]) -> None:
    found = _children(settings, SETTINGS, "Settings", problems)
    for name in SETTINGS_BOOLEANS & set(found):
        _boolean(found[name], f"Settings/{name}", problems)
    _one_of(found.get("MultipleInstancesPolicy"), "Settings/MultipleInstancesPolicy", INSTANCES_POLICIES, problems)
    _duration(found.get("ExecutionTimeLimit"), "Settings/ExecutionTimeLimit", problems)
    _integer(found.get("Priority"), "Settings/Priority", *PRIORITY, problems)
    if "IdleSettings" in found:
        idle = _children(found["IdleSettings"], IDLE_SETTINGS, "Settings/IdleSettings", problems)
        for name in ("StopOnIdleEnd", "RestartOnIdle"):
            _boolean(idle.get(name), f"Settings/IdleSettings/{name}", problems)
    if "RestartOnFailure" in found:
        where = "Settings/RestartOnFailure"
        restart = _children(found["RestartOnFailure"], {"Interval", "Count"}, where, problems, ("Interval", "Count"))
        _duration(restart.get("Interval"), f"{where}/Interval", problems, *RESTART_INTERVAL)
        _integer(restart.get("Count"), f"{where}/Count", *RESTART_COUNT, problems)


def _check_principals(principals: ET.Element, problems: list[str]) -> set[str]:
    found = list(principals)
    if len(found) != 1 or _local(found[0].tag) != "Principal":
        problems.append(f"Principals: expected exactly one Principal, got {len(found)} elements")
    ids = set()
    for principal in found:
        if _local(principal.tag) != "Principal":
            continue
        fields = _children(principal, PRINCIPAL, "Principals/Principal", problems)
        _one_of(fields.get("LogonType"), "Principals/Principal/LogonType", LOGON_TYPES, problems)
        _one_of(fields.get("RunLevel"), "Principals/Principal/RunLevel", RUN_LEVELS, problems)
        if "UserId" in fields and "GroupId" in fields:
            problems.append("Principals/Principal: UserId and GroupId exclude each other")
        if principal.get("id"):
            ids.add(str(principal.get("id")))
    return ids


def _check_actions(actions: ET.Element, principal_ids: set[str], problems: list[str]) -> None:
    context = actions.get("Context")
    if context is not None and context not in principal_ids:
        problems.append(f"Actions/@Context: {context!r} names no Principal id ({', '.join(sorted(principal_ids))})")
    if not 1 <= len(actions) <= MAX_ACTIONS:
        problems.append(f"Actions: expected 1 to {MAX_ACTIONS} actions, got {len(actions)}")
    for action in actions:
        if _local(action.tag) != "Exec":
            continue  # ComHandler, SendEmail, ShowMessage: not ours
        fields = _children(action, EXEC, "Actions/Exec", problems, required=("Command",))
        if "Command" in fields and not (fields["Command"].text or "").strip():
            problems.append("Actions/Exec/Command: empty")


# -- launchd ------------------------------------------------------------------------------------
_STR, _BOOL, _INT, _LIST, _DICT = "a string", "a boolean", "an integer", "an array", "a dictionary"
LAUNCHD_KEYS: dict[str, str] = {  # launchd.plist(5): each key and the type it takes
    "Label": _STR,
    "Disabled": _BOOL,
    "UserName": _STR,
    "GroupName": _STR,
    "inetdCompatibility": _DICT,
    "LimitLoadToHosts": _LIST,
    "LimitLoadFromHosts": _LIST,
    "LimitLoadToSessionType": _STR,  # or an array of them
    "LimitLoadToHardware": _DICT,
    "LimitLoadFromHardware": _DICT,
    "Program": _STR,
    "ProgramArguments": _LIST,
    "EnableGlobbing": _BOOL,
    "EnableTransactions": _BOOL,
    "EnablePressuredExit": _BOOL,
    "OnDemand": _BOOL,
    "SessionCreate": _BOOL,
    "KeepAlive": _BOOL,  # or a dictionary of conditions
    "RunAtLoad": _BOOL,
    "RootDirectory": _STR,
    "WorkingDirectory": _STR,
    "EnvironmentVariables": _DICT,
    "Umask": _INT,
    "TimeOut": _INT,
    "ExitTimeOut": _INT,
    "ThrottleInterval": _INT,
    "InitGroups": _BOOL,
    "WatchPaths": _LIST,
    "QueueDirectories": _LIST,
    "StartOnMount": _BOOL,
    "StartInterval": _INT,
    "StartCalendarInterval": _DICT,  # or an array of them
    "StandardInPath": _STR,
    "StandardOutPath": _STR,
    "StandardErrorPath": _STR,
    "Debug": _BOOL,
    "WaitForDebugger": _BOOL,
    "SoftResourceLimits": _DICT,
    "HardResourceLimits": _DICT,
    "Nice": _INT,
    "ProcessType": _STR,
    "AbandonProcessGroup": _BOOL,
    "LowPriorityIO": _BOOL,
    "LowPriorityBackgroundIO": _BOOL,
    "MaterializeDatalessFiles": _BOOL,
    "LaunchOnlyOnce": _BOOL,
    "MachServices": _DICT,
    "Sockets": _DICT,
    "LaunchEvents": _DICT,
    "HopefullyExitsFirst": _BOOL,
    "HopefullyExitsLast": _BOOL,
    "AssociatedBundleIdentifiers": _STR,  # or an array of them
}
ALSO_AN_ARRAY = {"LimitLoadToSessionType", "StartCalendarInterval", "AssociatedBundleIdentifiers"}
KEEPALIVE_CONDITIONS = {  # KeepAlive as a dictionary: each condition and its type
    "SuccessfulExit": _BOOL,
    "NetworkState": _BOOL,
    "PathState": _DICT,
    "OtherJobEnabled": _DICT,
    "Crashed": _BOOL,
    "AfterInitialDemand": _DICT,
}
PROCESS_TYPES = ("Background", "Standard", "Adaptive", "Interactive")


def _is(value: Any, kind: str) -> bool:
    """Whether a plistlib value has the plist type ``kind`` (``<true/>`` is no integer)."""
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {_STR: str, _LIST: list, _DICT: dict}[kind])


def plist_problems(data: bytes, label: str | None = None) -> list[str]:
    """What is wrong with the launchd job ``data`` (the plist's bytes), for launchd
    (launchd.plist(5)) and for lmsupervisor; ``label``: the one the file name and the
    ``launchctl`` service target expect."""
    try:
        job = plistlib.loads(data)
    except Exception as exc:  # noqa: BLE001 - plistlib raises ExpatError, ValueError, InvalidFileException
        return [f"plist: not a property list ({exc})"]
    if not isinstance(job, dict):
        return [f"plist: expected a dictionary at the top, got {type(job).__name__}"]
    problems: list[str] = []
    for key, value in job.items():
        kind = LAUNCHD_KEYS.get(key)
        if kind is None:
            problems.append(f"{key}: not a launchd.plist(5) key (launchd ignores it silently)")
        elif key == "KeepAlive" and isinstance(value, dict):
            problems += _keepalive_conditions(value)
        elif not _is(value, kind) and not (key in ALSO_AN_ARRAY and isinstance(value, list)):
            problems.append(f"{key}: expected {kind}, got {type(value).__name__} {value!r}")
    if not isinstance(job.get("Label"), str) or not job.get("Label"):
        problems.append("Label: missing (required: it names the job)")
    elif label is not None and job["Label"] != label:
        problems.append(f"Label: {job['Label']!r}, but the file and the service target name {label!r}")
    problems += _lmsupervisor_needs(job)
    return problems


def _keepalive_conditions(conditions: dict[str, Any]) -> list[str]:
    problems = []
    for name, value in conditions.items():
        kind = KEEPALIVE_CONDITIONS.get(name)
        if kind is None:
            problems.append(f"KeepAlive/{name}: not a KeepAlive condition of launchd.plist(5)")
        elif not _is(value, kind):
            problems.append(f"KeepAlive/{name}: expected {kind}, got {value!r}")
    return problems


def _lmsupervisor_needs(job: dict[str, Any]) -> list[str]:
    """What lmsupervisor needs of its job, beyond what launchd accepts."""
    problems = []
    args = job.get("ProgramArguments")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        problems.append("ProgramArguments: expected a non-empty array of strings (the command that starts us)")
    elif not args[0].startswith("/"):
        problems.append(f"ProgramArguments: {args[0]!r} is no absolute path (launchd's PATH is /usr/bin:/bin:...)")
    if job.get("RunAtLoad") is not True:
        problems.append("RunAtLoad: expected true (start at login/boot, not on demand)")
    keep = job.get("KeepAlive")
    if keep is not True:  # a dictionary restarts only under its conditions: SuccessfulExit true
        # restarts after exit 0 only, false after a failure only, Crashed after a signal only
        problems.append(f"KeepAlive: expected true (restart after every exit), got {keep!r}")
    if job.get("AbandonProcessGroup") is not True:
        problems.append("AbandonProcessGroup: expected true (else launchd kills LM Studio when we exit)")
    if job.get("ProcessType", "Standard") not in ("Standard", "Interactive"):
        problems.append(f"ProcessType: {job['ProcessType']!r} throttles LM Studio's CPU and I/O; expected Standard")
    if job.get("ProcessType") not in (None, *PROCESS_TYPES):
        problems.append(f"ProcessType: expected one of {', '.join(PROCESS_TYPES)}")
    for key in ("StandardOutPath", "StandardErrorPath"):
        if not isinstance(job.get(key), str) or not job[key].startswith("/"):
            problems.append(f"{key}: expected an absolute path (else the output is lost)")
    throttle = job.get("ThrottleInterval")
    if throttle is not None and _is(throttle, _INT) and throttle < 1:
        problems.append(f"ThrottleInterval: {throttle} respawns without a pause; expected at least 1 second")
    env = job.get("EnvironmentVariables", {})
    if isinstance(env, dict) and not all(isinstance(v, str) for v in env.values()):
        problems.append("EnvironmentVariables: every value must be a string")
    return problems


# -- command lines --------------------------------------------------------------------------
# schtasks /? per operation: the switches each takes, and which of them take a value
SCHTASKS_SWITCHES: dict[str, dict[str, bool]] = {
    "/CREATE": {
        **dict.fromkeys(("/S", "/U", "/P", "/RU", "/RP", "/SC", "/MO", "/D", "/M", "/I", "/TN", "/TR"), True),
        **dict.fromkeys(("/ST", "/RI", "/ET", "/DU", "/XML", "/SD", "/ED", "/RL", "/DELAY"), True),
        **dict.fromkeys(("/K", "/V1", "/IT", "/Z", "/F", "/NP", "/HRESULT"), False),
    },
    "/RUN": {**dict.fromkeys(("/S", "/U", "/P", "/TN"), True), "/I": False, "/HRESULT": False},
    "/END": {**dict.fromkeys(("/S", "/U", "/P", "/TN"), True), "/HRESULT": False},
    "/DELETE": {**dict.fromkeys(("/S", "/U", "/P", "/TN"), True), "/F": False, "/HRESULT": False},
    "/QUERY": {
        **dict.fromkeys(("/S", "/U", "/P", "/FO", "/TN"), True),
        **dict.fromkeys(("/NH", "/V", "/HRESULT"), False),
        "/XML": False,  # takes an optional ONE
    },
}

ALL_SWITCHES = {switch for switches in SCHTASKS_SWITCHES.values() for switch in switches}


def schtasks_usage(argv: list[str]) -> list[str]:
    """What ``schtasks`` would call invalid syntax in ``argv`` (without the program name)."""
    if not argv or argv[0].upper() not in SCHTASKS_SWITCHES:
        return [f"operation: expected one of {', '.join(SCHTASKS_SWITCHES)} first, got {argv[:1]}"]
    op, switches = argv[0].upper(), SCHTASKS_SWITCHES[argv[0].upper()]
    given: dict[str, str | None] = {}
    problems: list[str] = []
    i = 1
    while i < len(argv):
        switch = argv[i].upper()
        if switch not in switches:
            problems.append(f"{op} {argv[i]}: not a switch of {op}")
            i += 1
            continue
        if switch in given:
            problems.append(f"{op} {argv[i]}: given twice")
        value: str | None = None
        following = argv[i + 1] if i + 1 < len(argv) else None
        optional_one = switch == "/XML" and op == "/QUERY" and (following or "").upper() == "ONE"
        if switches[switch] or optional_one:
            if following is None or following.upper() in ALL_SWITCHES:
                problems.append(f"{op} {argv[i]}: needs a value")
            else:
                value = following
                i += 1
        given[switch] = value
        i += 1
    if "/TN" not in given and op != "/QUERY":
        problems.append(f"{op}: /TN taskname is required")
    if op == "/CREATE":
        if "/XML" in given and ({"/SC", "/TR"} & set(given)):
            problems.append("/CREATE /XML: the schedule comes from the XML; /SC and /TR are not allowed with it")
        if "/XML" not in given and not {"/SC", "/TR"} <= set(given):
            problems.append("/CREATE: needs /XML xmlfile, or /SC schedule and /TR taskrun")
    if op == "/QUERY":
        if "/XML" in given and ({"/FO", "/V", "/NH"} & set(given)):
            problems.append("/QUERY /XML: /FO, /V and /NH are not allowed with it")
        if (given.get("/FO") or "TABLE").upper() not in ("TABLE", "LIST", "CSV"):
            problems.append(f"/QUERY /FO: expected TABLE, LIST or CSV, got {given['/FO']!r}")
        if "/NH" in given and (given.get("/FO") or "TABLE").upper() == "LIST":
            problems.append("/QUERY /NH: only with /FO TABLE or CSV")
    return problems


DOMAIN = re.compile(r"system|(?:user|gui|login|pid)/\d+")
SERVICE = re.compile(rf"(?:{DOMAIN.pattern})/[A-Za-z0-9][A-Za-z0-9._-]*")
PLIST_PATH = re.compile(r"/.*\.plist")


def _all(pattern: re.Pattern[str], args: list[str]) -> bool:
    return all(pattern.fullmatch(a) for a in args)


LAUNCHCTL_FORMS: dict[str, tuple[str, Callable[[list[str]], bool]]] = {  # launchctl(1)
    "bootstrap": (
        "<domain-target> <service-path>...",
        lambda a: _all(DOMAIN, a[:1]) and _all(PLIST_PATH, a[1:]) and len(a) > 1,
    ),
    "bootout": (
        "<service-target> | <domain-target> [<service-path>...]",
        lambda a: (
            (len(a) == 1 and _all(SERVICE, a)) or (len(a) >= 1 and _all(DOMAIN, a[:1]) and _all(PLIST_PATH, a[1:]))
        ),
    ),
    "enable": ("<service-target>", lambda a: len(a) == 1 and _all(SERVICE, a)),
    "disable": ("<service-target>", lambda a: len(a) == 1 and _all(SERVICE, a)),
    "kickstart": (
        "[-kp] <service-target>",
        lambda a: len(a) >= 1 and _all(re.compile(r"-[kps]+"), a[:-1]) and _all(SERVICE, a[-1:]),
    ),
    "print": ("<service-target> | <domain-target>", lambda a: len(a) == 1 and (_all(SERVICE, a) or _all(DOMAIN, a))),
    "kill": ("<signal> <service-target>", lambda a: len(a) == 2 and _all(SERVICE, a[1:])),
}


def launchctl_usage(argv: list[str]) -> list[str]:
    """What launchctl(1) would refuse as usage in ``argv`` (without the program name); the
    legacy ``load``/``unload``/``start``/``stop`` are refused too (the manual calls them legacy)."""
    if not argv or argv[0] not in LAUNCHCTL_FORMS:
        return [f"subcommand: expected one of {', '.join(LAUNCHCTL_FORMS)}, got {argv[:1]}"]
    usage, accepts = LAUNCHCTL_FORMS[argv[0]]
    if not accepts(argv[1:]):
        return [f"{argv[0]}: {argv[1:]} is not {usage}"]
    return []
