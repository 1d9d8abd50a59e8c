"""``feedback-pipeline ui``: the Dagster, MLflow and Evidently UIs on localhost, stopped together.

Each server is this virtual environment's own executable (``dagster dev``, ``mlflow ui``,
``evidently ui``), started in a session and process group of its own. Ctrl-C in the terminal
therefore reaches only the launcher, which then stops every server with everything it started:
SIGTERM to each process group, SIGKILL to what is left after a grace period. The servers write
to log files under ``<data_dir>/logs/ui/``, not to the terminal.

Nothing here imports Dagster, MLflow or Evidently; it only starts their executables. POSIX only.
"""

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from feedback_pipeline.instance import prepare_dagster_home
from feedback_pipeline.lib.settings import Settings

SERVER_NAMES = ("dagster", "mlflow", "evidently")
DEFAULT_PORTS = {"dagster": 3000, "mlflow": 5000, "evidently": 8000}
DEFAULT_HOST = "127.0.0.1"
LOG_DIR = "logs/ui"
STOP_GRACE_SECONDS = 10.0
# Dagster starts a webserver, a daemon and a code server that imports the pipeline: the slowest.
STARTUP_TIMEOUTS = {"dagster": 90.0, "mlflow": 90.0, "evidently": 90.0}
PROGRESS_EVERY_SECONDS = 10.0
DEFINITIONS_MODULE = "feedback_pipeline.definitions"

Echo = Callable[[str], None]
_echo: Echo = functools.partial(print, flush=True)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SQLITE = re.compile(r"^sqlite(?:\+\w+)?:///(?P<path>[^?]*)")


class UiError(RuntimeError):
    """A server cannot start or stopped by itself; the message says which and why."""


class PortInUseError(UiError):
    """A port a server needs is taken; nothing was started."""


class ServerExitedError(UiError):
    """A server process exited on its own.

    Attributes:
        name: The server's name.
        returncode: Its exit code (negative: killed by that signal).
        log_tail: The last lines of its log.
    """

    def __init__(self, name: str, returncode: int, log: Path, log_tail: str, *, starting: bool):
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail
        when = "while starting" if starting else "while running"
        super().__init__(
            f"{name} exited with {_describe_exit(returncode)} {when}; the other servers were"
            f" stopped. Last lines of {log}:\n{log_tail}"
        )


class StartCancelled(UiError):
    """Stop was requested (Ctrl-C, SIGTERM) while the servers were starting; all were stopped."""


@dataclass(frozen=True)
class Server:
    """One UI server: the command that starts it and the address it listens on.

    Attributes:
        name: Short name, also the name of its log file.
        command: The executable and its arguments.
        host: The interface it binds to.
        port: The TCP port it listens on.
        option: The ``feedback-pipeline ui`` option that changes the port, for messages.
        startup_timeout: Seconds it may take to accept connections.
        env: Variables set for it on top of this process's environment.
    """

    name: str
    command: tuple[str, ...]
    host: str
    port: int
    option: str = ""
    startup_timeout: float = 60.0
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Where a browser on this machine reaches it."""
        host = _reachable_host(self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


@dataclass(frozen=True)
class Address:
    """A running server's name, URL and log file."""

    name: str
    url: str
    log: Path


@dataclass
class _Running:
    server: Server
    process: subprocess.Popen[bytes]
    log: Path


def parse_names(value: str) -> tuple[str, ...]:
    """Reads a comma-separated subset of ``dagster,mlflow,evidently``, in the canonical order.

    Args:
        value: For example ``"mlflow,evidently"``.

    Returns:
        The names, each once, in the order of ``SERVER_NAMES``.

    Raises:
        ValueError: A name is unknown or none is given.
    """
    names = {part.strip() for part in value.split(",") if part.strip()}
    unknown = sorted(names - set(SERVER_NAMES))
    if unknown or not names:
        raise ValueError(
            f"expected a comma-separated subset of {','.join(SERVER_NAMES)}, got {value!r}"
        )
    return tuple(name for name in SERVER_NAMES if name in names)


def ui_servers(
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    ports: Mapping[str, int] | None = None,
    only: Iterable[str] | None = None,
) -> list[Server]:
    """The servers to start for these settings, with the folders they need created.

    Dagster gets ``DAGSTER_HOME`` from ``prepare_dagster_home`` and the project's
    ``workspace.yaml``; MLflow the tracking store and artifact location of the settings; Evidently
    the reports workspace of the settings.

    Args:
        settings: The pipeline settings (data directory, tracking store, reports workspace).
        host: The interface every server binds to.
        ports: Port per server name; missing names get ``DEFAULT_PORTS``.
        only: The names to start; all three if None.

    Returns:
        The servers, in the order of ``SERVER_NAMES``.

    Raises:
        UiError: An executable is missing, or the tracking store is not one MLflow can serve.
    """
    wanted = SERVER_NAMES if only is None else parse_names(",".join(only))
    port = {**DEFAULT_PORTS, **(ports or {})}
    builders = {"dagster": _dagster, "mlflow": _mlflow, "evidently": _evidently}
    servers = []
    for name in wanted:
        command, env = builders[name](settings, host, port[name])
        servers.append(
            Server(
                name=name,
                command=command,
                host=host,
                port=port[name],
                option=f"--{name}-port",
                startup_timeout=STARTUP_TIMEOUTS[name],
                env=env,
            )
        )
    return servers


def _executable(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise UiError(f"{name} is not installed next to {sys.executable}: run `make setup`")
    return str(path)


def _dagster(settings: Settings, host: str, port: int) -> tuple[tuple[str, ...], dict[str, str]]:
    home = prepare_dagster_home(settings)
    # The project's workspace file, as `make dev` uses; without a checkout, the module.
    workspace = Path(__file__).parents[1] / "workspace.yaml"
    target = ("-w", str(workspace)) if workspace.is_file() else ("-m", DEFINITIONS_MODULE)
    command = (_executable("dagster"), "dev", "-h", host, "-p", str(port), *target)
    return command, {"DAGSTER_HOME": str(home)}


def _mlflow(settings: Settings, host: str, port: int) -> tuple[tuple[str, ...], dict[str, str]]:
    uri = settings.tracking.uri(settings)
    if uri.split(":", 1)[0] in ("http", "https", "databricks"):
        raise UiError(
            f"the MLflow tracking URI {uri} is a tracking server already: open it directly, and"
            " start the others with --only dagster,evidently"
        )
    if (match := _SQLITE.match(uri)) and match["path"] not in ("", ":memory:"):
        Path(match["path"]).parent.mkdir(parents=True, exist_ok=True)
    artifacts = settings.resolve(settings.tracking.artifact_location)
    command = (
        _executable("mlflow"),
        "ui",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        artifacts,
        # Uploads proxied through the server land there too, not in ./mlartifacts of the cwd.
        "--artifacts-destination",
        artifacts,
        # One local user: one uvicorn worker (it serves requests on threads) instead of four.
        "--workers",
        "1",
    )
    # The job runner (eight processes) only serves GenAI jobs such as LLM judges; unless asked
    # for, leave it out: the UI starts faster and stops cleaner.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env = {key: value for key, value in env.items() if key not in os.environ}
    return command, env


def _evidently(settings: Settings, host: str, port: int) -> tuple[tuple[str, ...], dict[str, str]]:
    workspace = settings.resolve(settings.reports.workspace)
    if "://" not in workspace:
        Path(workspace).mkdir(parents=True, exist_ok=True)
    command = (
        _executable("evidently"),
        "ui",
        "--workspace",
        workspace,
        "--host",
        host,
        "--port",
        str(port),
    )
    return command, {}


class UiServers:
    """Starts servers together, each in its own process group, and stops them together.

    Use as a context manager (``with UiServers(servers, log_dir) as ui:`` starts them and stops
    them on leaving) or call ``start()`` and ``stop()``.

    Args:
        servers: What to start.
        log_dir: Folder of the log files, one ``<name>.log`` per server, rewritten on each start.
        echo: Where progress lines go.
        poll_interval: Seconds between checks while waiting for ports.
    """

    def __init__(
        self,
        servers: Sequence[Server],
        log_dir: str | Path,
        *,
        echo: Echo = _echo,
        poll_interval: float = 0.2,
    ) -> None:
        self.servers = list(servers)
        self.log_dir = Path(log_dir)
        self._echo = echo
        self._poll_interval = poll_interval
        self._running: list[_Running] = []

    def __enter__(self) -> "UiServers":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def addresses(self) -> list[Address]:
        """Name, URL and log file of each started server."""
        return [Address(r.server.name, r.server.url, r.log) for r in self._running]

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each started server; it is also the id of its process group."""
        return {r.server.name: r.process.pid for r in self._running}

    def start(self, cancel: threading.Event | None = None) -> list[Address]:
        """Checks the ports, starts every server and waits until each accepts connections.

        Args:
            cancel: When set while waiting, everything is stopped and ``StartCancelled`` raised.

        Returns:
            The addresses of the servers.

        Raises:
            PortInUseError: A port is taken (or asked for twice); nothing was started.
            ServerExitedError: A server exited while starting; the others were stopped.
            UiError: A server did not accept connections in time; all were stopped.
            StartCancelled: ``cancel`` was set; all were stopped.
        """
        if self._running:
            raise RuntimeError("the servers are running already")
        self._check_ports()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for server in self.servers:
                self._launch(server)
            self._wait_until_listening(cancel)
        except BaseException:
            self.stop()
            raise
        return self.addresses

    def _check_ports(self) -> None:
        problems = []
        owners: dict[int, str] = {}
        taken = {server.port for server in self.servers}
        for server in self.servers:
            change = f"with {server.option} " if server.option else ""
            if server.port in owners:
                problems.append(
                    f"{owners[server.port]} and {server.name} are both given port {server.port}:"
                    f" give {server.name} another {change}".rstrip()
                )
                continue
            owners[server.port] = server.name
            if _port_in_use(server.host, server.port):
                hint = _free_port(server.host, server.port, taken)
                taken.add(hint)
                problems.append(
                    f"port {server.port} on {server.host} is already in use, so {server.name}"
                    f" cannot listen there: stop what uses it, or choose another port {change}"
                    f"(e.g. {server.option or 'port'} {hint})"
                )
        if problems:
            raise PortInUseError(
                "cannot start the UIs (nothing was started):\n"
                + "\n".join(f"  - {problem}" for problem in problems)
            )

    def _launch(self, server: Server) -> None:
        log = self.log_dir / f"{server.name}.log"
        with log.open("wb") as out:
            out.write(f"$ {' '.join(server.command)}\n".encode())
            out.flush()
            try:
                process = subprocess.Popen(
                    server.command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **server.env},
                    start_new_session=True,
                )
            except OSError as exc:
                raise UiError(f"cannot start {server.name}: {exc}") from exc
        self._running.append(_Running(server, process, log))
        self._say(f"starting {server.name} on {server.url} (log: {log})")

    def _wait_until_listening(self, cancel: threading.Event | None) -> None:
        started = time.monotonic()
        waiting = {r.server.name: r for r in self._running}
        next_progress = started + PROGRESS_EVERY_SECONDS
        while waiting:
            if cancel is not None and cancel.is_set():
                raise StartCancelled("stopped while starting; every server was stopped")
            elapsed = time.monotonic() - started
            for running in self._running:
                code = running.process.poll()
                if code is not None:
                    raise ServerExitedError(
                        running.server.name, code, running.log, _tail(running.log), starting=True
                    )
            for name, running in list(waiting.items()):
                if _accepts(running.server.host, running.server.port):
                    del waiting[name]
                    self._echo(f"{name} is up after {elapsed:.0f} s")
                elif elapsed > running.server.startup_timeout:
                    raise UiError(
                        f"{name} did not listen on port {running.server.port} within"
                        f" {running.server.startup_timeout:.0f} s; every server was stopped."
                        f" Last lines of {running.log}:\n{_tail(running.log)}"
                    )
            now = time.monotonic()
            if waiting and now >= next_progress:
                self._echo(f"waiting for {', '.join(waiting)} ({now - started:.0f} s)")
                next_progress = now + PROGRESS_EVERY_SECONDS
            if waiting:
                # Sleep, not cancel.wait(): a signal handler sets the event on this thread, and
                # Event.set() would deadlock on the lock Event.wait() holds.
                time.sleep(self._poll_interval)

    def exited(self) -> list[ServerExitedError]:
        """The servers whose process has exited, as errors to report."""
        return [
            ServerExitedError(r.server.name, code, r.log, _tail(r.log), starting=False)
            for r in self._running
            if (code := r.process.poll()) is not None
        ]

    def stop(self, grace: float = STOP_GRACE_SECONDS, *, quiet: bool = False) -> None:
        """Stops every server with everything it started; safe to call more than once.

        SIGTERM goes to each server's process group (and to any descendant that left it), SIGKILL
        to whatever is still alive ``grace`` seconds later.

        Args:
            grace: Seconds to wait for a clean exit before killing.
            quiet: Print nothing.
        """
        running, self._running = self._running, []
        if not running:
            return
        if not quiet:
            self._say(
                f"stopping {', '.join(r.server.name for r in running)} (at most {grace:.0f} s)"
            )
        groups = [r.process.pid for r in running]
        strays = {pid for r in running for pid in _descendants(r.process.pid)} - set(
            _members(groups)
        )
        _signal_all(groups, strays, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(running, groups, strays):
            time.sleep(0.1)
        if _alive(running, groups, strays):
            _signal_all(groups, strays, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and _alive(running, groups, strays):
                time.sleep(0.05)
        left = sorted(_members(groups) | (strays & set(_processes())))
        if left:
            self._say(f"could not stop processes {left}")
        elif not quiet:
            self._say("stopped")

    def _say(self, line: str) -> None:
        # Stopping must not fail for want of a terminal (SIGHUP: the terminal is gone).
        with suppress(OSError, ValueError):
            self._echo(line)


def run_until_interrupted(
    servers: UiServers,
    stop: threading.Event | None = None,
    *,
    echo: Echo = _echo,
    poll_interval: float = 0.5,
) -> int:
    """Starts the servers, prints their addresses and keeps them up until asked to stop.

    In the main thread SIGINT, SIGTERM and SIGHUP (the terminal closing) ask to stop; any thread
    can ask by setting ``stop``. Either way every server is stopped before this returns.

    Args:
        servers: The servers, not started yet.
        stop: Set it to stop them; a new event if None.
        echo: Where the address table and progress go.
        poll_interval: Seconds between checks that every server is still running.

    Returns:
        0, once stopped on request.

    Raises:
        ServerExitedError: A server exited by itself; the others were stopped.
        UiError: A server could not start (nothing is left running).
    """
    stop = stop or threading.Event()
    with _stop_on_signals(stop):
        try:
            servers.start(cancel=stop)
        except StartCancelled:
            echo("stopped while starting")
            return 0
        try:
            echo(format_addresses(servers.addresses))
            echo("Ctrl-C stops them all.")
            while not stop.is_set():
                time.sleep(poll_interval)
                if dead := servers.exited():
                    raise dead[0]
            return 0
        finally:
            servers.stop()


def run_ui(
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    ports: Mapping[str, int] | None = None,
    only: Iterable[str] | None = None,
    echo: Echo = _echo,
) -> int:
    """What ``feedback-pipeline ui`` does: start the UIs, serve until interrupted, stop them.

    Args:
        settings: The pipeline settings.
        host: The interface every server binds to.
        ports: Port per server name; missing names get ``DEFAULT_PORTS``.
        only: The names to start; all three if None.
        echo: Where progress and the address table go.

    Returns:
        0, after Ctrl-C, SIGTERM or SIGHUP stopped every server.

    Raises:
        UiError: A server could not start, or exited by itself (nothing is left running).
    """
    servers = ui_servers(settings, host=host, ports=ports, only=only)
    log_dir = Path(settings.resolve(LOG_DIR))
    return run_until_interrupted(UiServers(servers, log_dir, echo=echo), echo=echo)


def format_addresses(addresses: Sequence[Address]) -> str:
    """A table of name, URL and log file, one server per line."""
    rows = [("UI", "URL", "LOG"), *((a.name, a.url, str(a.log)) for a in addresses)]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(
        f"{name.ljust(widths[0])}  {url.ljust(widths[1])}  {log}" for name, url, log in rows
    )


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    wanted = [signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)]
    previous = {s: signal.signal(s, _request_stop) for s in wanted if s is not None}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _reachable_host(host: str) -> str:
    """The address to connect to for a server bound to ``host`` (wildcards mean loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_reachable_host(host), port), timeout=0.5):
            return True
    except OSError:
        return False


def _port_in_use(host: str, port: int) -> bool:
    """True if binding ``host:port`` fails the way a server's bind would (a listener is there)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=0)
    except socket.gaierror:
        return False  # the server reports the bad host itself
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Like uvicorn: connections in TIME_WAIT do not count, only a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return True
    return _accepts(host, port)


def _free_port(host: str, port: int, taken: set[int]) -> int:
    """The first port after ``port`` that is free and not ``taken``, to suggest."""
    for candidate in range(port + 1, min(port + 100, 65536)):
        if candidate not in taken and not _port_in_use(host, candidate):
            return candidate
    return port + 1


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _tail(log: Path, lines: int = 20) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 16_384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = _ANSI.sub("", text).splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in kept) or "  | (empty)"


def _processes() -> dict[int, tuple[int, int]]:
    """Parent and process group of every live (not zombie) process, read from ``/proc``."""
    table = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X"):
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def _descendants(pid: int) -> set[int]:
    """Live descendants of ``pid`` (empty where ``/proc`` is missing)."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in _processes().items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _members(groups: Iterable[int]) -> set[int]:
    """Live members of these process groups (empty where ``/proc`` is missing)."""
    wanted = set(groups)
    return {pid for pid, (_, group) in _processes().items() if group in wanted}


def _signal_all(groups: Iterable[int], strays: Iterable[int], signum: signal.Signals) -> None:
    for group in groups:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signum)
    for pid in strays:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _alive(running: Sequence[_Running], groups: Sequence[int], strays: set[int]) -> bool:
    """Reaps the servers that exited; True while any of them or their processes lives on."""
    leaders_alive = [r.process.poll() is None for r in running]
    if Path("/proc").is_dir():
        wanted = set(groups)
        return any(leaders_alive) or any(
            group in wanted or pid in strays for pid, (_, group) in _processes().items()
        )
    if any(leaders_alive):
        return True
    for group in groups:
        try:
            os.killpg(group, 0)
            return True
        except ProcessLookupError:
            pass
        except PermissionError:
            return True
    return False
