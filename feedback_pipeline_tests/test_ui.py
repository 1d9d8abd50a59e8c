"""`feedback-pipeline ui`: real servers on free ports, started and stopped with all they started."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from feedback_pipeline import cli
from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.ui import (
    LOG_DIR,
    PortInUseError,
    Server,
    ServerExitedError,
    UiError,
    UiServers,
    parse_names,
    run_until_interrupted,
    ui_servers,
)

LOCALHOST = "127.0.0.1"
PROC = Path("/proc")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens there and a server could bind it again (as uvicorn does)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOCALHOST, port))
        except OSError:
            return False
    with socket.socket() as client:
        return client.connect_ex((LOCALHOST, port)) != 0


def listening_hosts(port: int) -> set[str]:
    """Local addresses with a TCP listener on ``port``, from /proc/net/tcp and tcp6."""
    hosts = set()
    for table in ("tcp", "tcp6"):
        for line in (PROC / "net" / table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    hosts.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    hosts.add(socket.inet_ntop(socket.AF_INET6, words))
    return hosts


def _stat(pid: int) -> tuple[str, int, int, str] | None:
    """State, parent, process group and start time of a process, None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), fields[19]


def _table() -> dict[int, tuple[str, int, int, str]]:
    pids = (int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit())
    return {pid: stat for pid in pids if (stat := _stat(pid)) and stat[0] not in ("Z", "X")}


def _below(table: dict[int, tuple[str, int, int, str]], pids: set[int]) -> set[int]:
    found = set(pids)
    while True:
        more = {pid for pid, (_, parent, _, _) in table.items() if parent in found} - found
        if not more:
            return found
        found |= more


def process_family(leaders: list[int]) -> dict[int, str]:
    """Every live process in the leaders' process groups or below them, with its start time."""
    table = _table()
    in_groups = {pid for pid, (_, _, group, _) in table.items() if group in leaders}
    family = _below(table, in_groups | set(leaders))
    return {pid: table[pid][3] for pid in family if pid in table}


def descendants(pid: int) -> set[int]:
    """Live processes below ``pid``."""
    return _below(_table(), {pid}) - {pid}


def still_running(family: dict[int, str]) -> list[int]:
    """The processes of ``family`` still alive (a zombie or a reused pid counts as gone)."""
    alive = []
    for pid, started in family.items():
        stat = _stat(pid)
        if stat is not None and stat[0] not in ("Z", "X") and stat[3] == started:
            alive.append(pid)
    return alive


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status


def http_server(name: str, port: int) -> Server:
    """A cheap stand-in for a UI server: Python's own HTTP server."""
    command = (sys.executable, "-m", "http.server", str(port), "--bind", LOCALHOST)
    return Server(name=name, command=command, host=LOCALHOST, port=port, startup_timeout=20)


def test_parse_names_keeps_the_canonical_order_and_rejects_unknown_names():
    assert parse_names("evidently, mlflow,mlflow") == ("mlflow", "evidently")
    with pytest.raises(ValueError, match="dagster,mlflow,evidently"):
        parse_names("mlflow,grafana")
    with pytest.raises(ValueError):
        parse_names(" , ")


def test_commands_use_this_venv_the_settings_and_localhost(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    servers = {s.name: s for s in ui_servers(settings)}
    assert list(servers) == ["dagster", "mlflow", "evidently"]
    assert [s.port for s in servers.values()] == [3000, 5000, 8000]
    bin_dir = Path(sys.executable).parent
    for server in servers.values():
        assert Path(server.command[0]) == bin_dir / server.name
        assert server.url == f"http://{LOCALHOST}:{server.port}"
        assert server.option == f"--{server.name}-port"
    dagster = servers["dagster"].command
    assert dagster[1:6] == ("dev", "-h", LOCALHOST, "-p", "3000")
    assert Path(dagster[dagster.index("-w") + 1]).name == "workspace.yaml"
    home = Path(servers["dagster"].env["DAGSTER_HOME"])
    assert home == Path(settings.data_root) / "dagster_home" and (home / "dagster.yaml").is_file()
    mlflow = servers["mlflow"].command
    db = Path(settings.resolve("mlflow/mlflow.db"))
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == f"sqlite:///{db}"
    assert db.parent.is_dir()
    artifacts = settings.resolve(settings.tracking.artifact_location)
    assert mlflow[mlflow.index("--default-artifact-root") + 1] == artifacts
    assert mlflow[mlflow.index("--host") + 1] == LOCALHOST
    evidently = servers["evidently"].command
    workspace = evidently[evidently.index("--workspace") + 1]
    assert workspace == settings.resolve(settings.reports.workspace) and Path(workspace).is_dir()
    assert evidently[evidently.index("--host") + 1] == LOCALHOST


def test_mlflow_and_evidently_answer_on_localhost_and_stop_with_every_process(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ports = {"mlflow": free_port(), "evidently": free_port()}
    servers = ui_servers(settings, ports=ports, only=["evidently", "mlflow"])
    lines: list[str] = []
    log_dir = Path(settings.resolve(LOG_DIR))
    ui = UiServers(servers, log_dir, echo=lines.append)
    with ui:
        addresses = {a.name: a for a in ui.addresses}
        assert list(addresses) == ["mlflow", "evidently"]
        for name, port in ports.items():
            assert addresses[name].url == f"http://{LOCALHOST}:{port}"
            assert addresses[name].log == log_dir / f"{name}.log"
            assert get(addresses[name].url + "/") == 200
            assert listening_hosts(port) == {LOCALHOST}
        assert get(addresses["mlflow"].url + "/health") == 200
        family = process_family(list(ui.pids.values()))
        assert set(ui.pids.values()) < set(family)  # mlflow runs uvicorn in a child
        assert Path(settings.resolve("mlflow/mlflow.db")).is_file()
    assert still_running(family) == []
    assert all(port_is_free(port) for port in ports.values())
    assert ui.addresses == [] and ui.pids == {}
    assert any(line.startswith("starting mlflow on http://127.0.0.1:") for line in lines)
    assert any(line.startswith("evidently is up after") for line in lines)
    assert (log_dir / "mlflow.log").read_text().startswith("$ ")


@pytest.mark.slow
def test_dagster_answers_server_info_and_stops_with_its_webserver_daemon_and_code_server(
    settings: Settings,
):
    port = free_port()
    servers = ui_servers(settings, ports={"dagster": port}, only=["dagster"])
    with UiServers(servers, settings.resolve(LOG_DIR), echo=lambda line: None) as ui:
        (address,) = ui.addresses
        assert address.url == f"http://{LOCALHOST}:{port}"
        with urllib.request.urlopen(address.url + "/server_info", timeout=30) as response:
            assert response.status == 200
            assert "dagster_webserver_version" in json.loads(response.read())
        assert listening_hosts(port) == {LOCALHOST}
        family = process_family(list(ui.pids.values()))
        assert len(family) >= 3  # dagster dev, its webserver and daemon (and code servers)
    assert still_running(family) == []
    assert port_is_free(port)


def test_a_busy_port_fails_fast_naming_port_server_and_option(settings: Settings):
    with socket.socket() as busy:
        busy.bind((LOCALHOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        servers = ui_servers(settings, ports={"mlflow": port}, only=["mlflow", "evidently"])
        log_dir = Path(settings.resolve(LOG_DIR))
        ui = UiServers(servers, log_dir, echo=lambda line: None)
        started = time.monotonic()
        with pytest.raises(PortInUseError) as failure:
            ui.start()
        assert time.monotonic() - started < 5
        message = str(failure.value)
        assert f"port {port}" in message and "mlflow" in message and "--mlflow-port" in message
        assert "evidently" not in message and "nothing was started" in message
        assert ui.pids == {} and not log_dir.exists()


def test_the_cli_reports_a_busy_port_and_exits_1_without_starting_anything(
    settings: Settings, capsys: pytest.CaptureFixture[str]
):
    before = descendants(os.getpid())
    with socket.socket() as busy:
        busy.bind((LOCALHOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["ui", "--only", "evidently", "--evidently-port", str(port)]
        assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"port {port}" in err and "evidently" in err and "--evidently-port" in err
    assert descendants(os.getpid()) <= before
    assert not Path(settings.resolve(LOG_DIR)).exists()


def test_two_servers_on_one_port_fail_before_starting(tmp_path: Path):
    port = free_port()
    servers = [http_server("one", port), http_server("two", port)]
    ui = UiServers(servers, tmp_path, echo=lambda line: None)
    with pytest.raises(PortInUseError, match=f"one and two are both given port {port}"):
        ui.start()
    assert ui.pids == {}


def test_a_server_dying_at_start_is_reported_and_the_others_stopped(tmp_path: Path):
    crash = "import sys, time; time.sleep(1); print('no such workspace', flush=True); sys.exit(3)"
    bogus = Server("bogus", (sys.executable, "-c", crash), LOCALHOST, free_port())
    healthy = http_server("healthy", free_port())
    ui = UiServers([healthy, bogus], tmp_path, echo=lambda line: None)
    before = descendants(os.getpid())
    with pytest.raises(ServerExitedError) as failure:
        ui.start()
    error = failure.value
    assert (error.name, error.returncode) == ("bogus", 3)
    assert "bogus exited with exit code 3 while starting" in str(error)
    assert "no such workspace" in error.log_tail
    assert ui.pids == {}
    assert descendants(os.getpid()) <= before  # the healthy one is gone too
    assert port_is_free(healthy.port)


def silent(port: int, timeout: float = 60) -> Server:
    """A server that never listens."""
    command = (sys.executable, "-c", "import time; time.sleep(600)")
    return Server("silent", command, LOCALHOST, port, startup_timeout=timeout)


def test_a_server_that_never_listens_times_out_and_is_stopped(tmp_path: Path):
    ui = UiServers([silent(free_port(), timeout=1)], tmp_path, echo=lambda line: None)
    before = descendants(os.getpid())
    with pytest.raises(UiError, match=r"silent did not listen on port \d+ within 1 s"):
        ui.start()
    assert descendants(os.getpid()) <= before


def test_a_stop_request_while_starting_stops_everything_and_returns_0(tmp_path: Path):
    ui = UiServers([silent(free_port())], tmp_path, echo=lambda line: None)
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(run_until_interrupted(ui, stop)))
    runner.start()
    deadline = time.monotonic() + 10
    while not ui.pids and time.monotonic() < deadline:
        time.sleep(0.05)
    family = process_family(list(ui.pids.values()))
    stop.set()
    runner.join(timeout=20)
    assert result == [0] and family
    assert still_running(family) == []


def test_run_until_interrupted_prints_the_table_and_stops_on_request(tmp_path: Path):
    servers = [http_server("alpha", free_port()), http_server("beta", free_port())]
    ui = UiServers(servers, tmp_path, echo=lambda line: None)
    stop = threading.Event()
    lines: list[str] = []
    result: list[int] = []
    runner = threading.Thread(
        target=lambda: result.append(run_until_interrupted(ui, stop, echo=lines.append))
    )
    runner.start()
    deadline = time.monotonic() + 30
    while not any("Ctrl-C" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    table = "\n".join(lines)
    for server in servers:
        assert f"{server.name}" in table and server.url in table
        assert str(tmp_path / f"{server.name}.log") in table
        assert get(server.url + "/") == 200
    family = process_family(list(ui.pids.values()))
    stop.set()
    runner.join(timeout=20)
    assert result == [0]
    assert still_running(family) == []


def test_run_until_interrupted_raises_for_a_server_that_dies_after_stopping_the_rest(
    tmp_path: Path,
):
    servers = [http_server("alpha", free_port()), http_server("beta", free_port())]
    ui = UiServers(servers, tmp_path, echo=lambda line: None)
    lines: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_until_interrupted(ui, echo=lines.append)
        except ServerExitedError as exc:
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 30
    while not any("Ctrl-C" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    family = process_family(list(ui.pids.values()))
    os.kill(ui.pids["beta"], signal.SIGKILL)
    runner.join(timeout=20)
    (error,) = errors
    assert (error.name, error.returncode) == ("beta", -signal.SIGKILL)
    assert "beta exited with signal SIGKILL while running" in str(error)
    assert "Serving HTTP" in error.log_tail
    assert still_running(family) == []


STUBBORN = textwrap.dedent(
    """
    import signal, socket, subprocess, sys, time
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", ignore])  # in the group, ignores SIGTERM
    subprocess.Popen([sys.executable, "-c", ignore], start_new_session=True)  # left the group
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen()
    time.sleep(600)
    """
)


def test_stop_kills_what_ignores_sigterm_and_children_that_left_the_group(tmp_path: Path):
    port = free_port()
    stubborn = Server("stubborn", (sys.executable, "-c", STUBBORN, str(port)), LOCALHOST, port)
    ui = UiServers([stubborn], tmp_path, echo=lambda line: None)
    ui.start()
    deadline = time.monotonic() + 10
    while len(family := process_family(list(ui.pids.values()))) < 3:
        assert time.monotonic() < deadline, family
        time.sleep(0.05)
    started = time.monotonic()
    ui.stop(grace=1.0)
    assert time.monotonic() - started < 5
    assert still_running(family) == []
    assert port_is_free(port)


LAUNCHER = textwrap.dedent(
    """
    import sys
    from feedback_pipeline.ui import Server, UiServers, run_until_interrupted

    port, log_dir = int(sys.argv[1]), sys.argv[2]
    command = (sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1")
    server = Server("web", command, "127.0.0.1", port)
    sys.exit(run_until_interrupted(UiServers([server], log_dir)))
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_launcher_stops_every_server_and_exits_0(tmp_path: Path, signum: int):
    port = free_port()
    # Like a terminal: the launcher leads its own foreground group, which Ctrl-C signals.
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(port), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        output = []
        assert launcher.stdout is not None
        for line in launcher.stdout:
            output.append(line)
            if "Ctrl-C" in line:
                break
        assert any(f"http://127.0.0.1:{port}" in line for line in output), output
        family = process_family([launcher.pid])
        assert len(family) >= 2
        os.killpg(launcher.pid, signum)
        rest, _ = launcher.communicate(timeout=20)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 0, "".join(output) + rest
    assert "stopped" in rest
    assert still_running(family) == []
    assert port_is_free(port)
