"""``ferry egress --workers N``: several egress processes behind nginx, on one machine.

One egress process uses one core. With ``--workers N`` the command becomes a small supervisor:

1. it creates the egress identity once in ``--state-dir`` (every worker then loads the same
   key and certificate, so the one bridge line names all of them);
2. it starts N egress processes, each the same command line on its own loopback port
   (``127.0.0.1``, ports chosen when the supervisor starts and kept for its lifetime), with its
   own admin port for ``/metrics``;
3. it writes an nginx configuration (``STATE_DIR/nginx/nginx.conf``) that listens on
   ``--listen`` and routes each volunteer WebSocket by its ``route`` parameter
   (``hash $ferry_route consistent``, :mod:`ferry.core.route_key`), and runs Debian's nginx;
4. it restarts a worker that exits (on the same port, so nginx's configuration stays right),
   and on SIGTERM passes SIGTERM to every worker (each drains for ``--drain-seconds``), then
   stops nginx.

Worker ports, PIDs and admin URLs are written to ``STATE_DIR/workers.json`` and to the ready
file. :class:`EgressWorkersRole` is the role app ``ferry egress`` runs for it. Without nginx
the command stops with a clear message (see :func:`find_nginx`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from ferry.egress.identity import load_or_create_identity
from ferry.errors import ConfigError, LocalError
from ferry.logs import get_logger
from ferry.roles import console

log = get_logger(__name__)

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
"""Where nginx is looked for when it is not on ``PATH``."""

WORKER_OPTIONS = ("--workers", "--listen", "--admin-listen", "--ready-file", "--public-url")
"""Options of the supervisor's command line that each worker gets its own value for."""


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    """Settings of ``ferry egress --workers N``."""

    count: int
    """Egress processes to run (at least 2; 1 is the plain egress)."""
    host: str
    """Address nginx listens on for volunteers (``--listen``)."""
    port: int
    """Port nginx listens on."""
    state_dir: Path
    """The egress state folder every worker shares (identity, nginx configuration)."""
    public_url: str
    """The URL volunteers reach the egress at: the one in the bridge line."""
    worker_arguments: tuple[str, ...]
    """The egress command line (after ``ferry``) without the options in ``WORKER_OPTIONS``."""
    nginx: Path
    """The nginx binary."""
    drain_seconds: float = 30.0
    """Each worker's ``--drain-seconds``: how long the supervisor waits for them on SIGTERM."""
    start_timeout: float = 60.0
    """Longest wait, in seconds, for every worker and nginx to be ready."""
    restart_delay: float = 1.0
    """Seconds before a worker that exited is started again."""

    def __post_init__(self) -> None:
        if self.count < 2:
            raise ConfigError("--workers must be at least 2 to run several processes")


def worker_count(value: str, cores: Callable[[], int | None] = os.cpu_count) -> int:
    """``--workers``: a positive number, or ``auto`` for the number of cores."""
    if value.strip().lower() == "auto":
        return max(1, cores() or 1)
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"--workers must be a number or auto, not {value!r}") from None
    if not 1 <= count <= 256:
        raise ConfigError("--workers must be between 1 and 256 (or auto)")
    return count


def find_nginx(
    candidates: Sequence[str] = NGINX_CANDIDATES, search_path: str | None = None
) -> Path:
    """The nginx binary (on ``search_path``, default ``PATH``, then in ``candidates``);
    :class:`ConfigError` saying how to install it when there is none."""
    found = shutil.which("nginx", path=search_path)
    for candidate in ([found] if found else []) + list(candidates):
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ConfigError(
        "--workers needs nginx to route volunteers to the egress processes, and nginx is not "
        "installed (apt-get install nginx-light, or nginx from your distribution); or run "
        "one egress process without --workers"
    )


def without_worker_options(arguments: Sequence[str]) -> tuple[str, ...]:
    """``arguments`` without the options each worker gets its own value for (both the
    ``--option value`` and the ``--option=value`` forms)."""
    kept: list[str] = []
    skip_next = False
    for argument in arguments:
        if skip_next:
            skip_next = False
            continue
        name = argument.split("=", 1)[0]
        if name in WORKER_OPTIONS:
            skip_next = "=" not in argument
            continue
        kept.append(argument)
    return tuple(kept)


def _listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def nginx_config(
    *, host: str, port: int, upstream_ports: Sequence[int], folder: Path, root: bool = False
) -> str:
    """An nginx configuration listening on ``host:port`` that routes every WebSocket to
    ``/v1/relay`` to one of the egress processes on ``127.0.0.1:upstream_ports`` by the
    hash of its ``route`` parameter. No access log and only critical errors: both would hold
    volunteers' addresses."""
    servers = "\n".join(
        f"        server 127.0.0.1:{upstream} max_fails=1 fail_timeout=5s;"
        for upstream in upstream_ports
    )
    temp = "\n".join(
        f"    {name}_temp_path {folder / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if root else ""
    return f"""# Written by ferry egress --workers; rewritten at every start.
{user}daemon off;
# One nginx worker per core: proxying costs about a fifth of what the egress does per byte.
worker_processes auto;
pid {folder / "nginx.pid"};
# crit: nginx's [error] lines name the volunteer's address ("client: ...").
error_log stderr crit;
events {{ worker_connections 16384; }}
http {{
    access_log off;
{temp}
    map $http_upgrade $ferry_connection_upgrade {{ default upgrade; "" close; }}
    # nginx balances an empty hash key round-robin, which would scatter an older client's
    # paths (they carry no key): give them one fixed key, so they all reach one process.
    map $arg_route $ferry_route {{ default $arg_route; "" none; }}
    upstream ferry_egress {{
        # Every WebSocket of one client session carries the same route key: the same process.
        hash $ferry_route consistent;
{servers}
    }}
    server {{
        listen {_listen_address(host, port)};
        location = /v1/relay {{
            proxy_pass http://ferry_egress;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $ferry_connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
            proxy_read_timeout 120s;  # WebSocket pings come every 20 s
            proxy_send_timeout 120s;
        }}
        location / {{ return 404; }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(slots=True)
class Worker:
    """One egress process of the supervisor."""

    number: int
    """1..N, in the order they were started."""
    port: int
    """Its relay port on 127.0.0.1 (what nginx routes to)."""
    admin_port: int
    """Its ``/metrics`` and ``/healthz`` port on 127.0.0.1."""
    process: asyncio.subprocess.Process | None = None
    """The running process, if any."""
    restarts: int = 0
    """How often it was started again after exiting."""

    @property
    def admin_url(self) -> str:
        """Where its metrics are."""
        return f"http://127.0.0.1:{self.admin_port}"


class EgressWorkers:
    """The supervisor: N egress processes and the nginx in front of them.

    ``start`` returns once every worker is ready and nginx listens; ``run`` restarts workers
    that exit until ``stop`` is set, then drains them (SIGTERM) and stops nginx.
    """

    def __init__(self, config: WorkersConfig) -> None:
        self.config = config
        self.folder = config.state_dir / "nginx"
        self.workers = [
            Worker(number=n + 1, port=_free_port(), admin_port=_free_port())
            for n in range(config.count)
        ]
        self.nginx: asyncio.subprocess.Process | None = None
        self.bridge_line = ""
        self.created_identity = False

    async def start(self) -> None:
        """Create the identity once, start every worker, then nginx; wait until all are ready."""
        _, self.created_identity = load_or_create_identity(self.config.state_dir)
        for name in ("", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.folder / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        for worker in self.workers:
            await self._start_worker(worker)
        async with asyncio.timeout(self.config.start_timeout):
            ready = [await self._wait_ready(worker) for worker in self.workers]
        self.bridge_line = str(ready[0]["bridge"])
        await self._start_nginx()
        self.write_state()

    def _ready_path(self, worker: Worker) -> Path:
        return self.folder / f"worker-{worker.number}.ready.json"

    async def _start_worker(self, worker: Worker) -> None:
        self._ready_path(worker).unlink(missing_ok=True)
        environment = {k: v for k, v in os.environ.items() if k != "FERRY_EGRESS_WORKERS"}
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ferry",
            *self.config.worker_arguments,
            "--workers=1",
            f"--listen=127.0.0.1:{worker.port}",
            f"--admin-listen=127.0.0.1:{worker.admin_port}",
            f"--public-url={self.config.public_url}",
            f"--ready-file={self._ready_path(worker)}",
            stdin=asyncio.subprocess.DEVNULL,
            env=environment,
        )

    async def _wait_ready(self, worker: Worker) -> dict[str, object]:
        path = self._ready_path(worker)
        while not path.exists():
            if worker.process is None or worker.process.returncode is not None:
                raise LocalError(f"egress worker {worker.number} exited while starting")
            await asyncio.sleep(0.05)
        content: dict[str, object] = json.loads(path.read_text("utf-8"))
        return content

    async def _start_nginx(self) -> None:
        config_path = self.folder / "nginx.conf"
        config_path.write_text(
            nginx_config(
                host=self.config.host,
                port=self.config.port,
                upstream_ports=[worker.port for worker in self.workers],
                folder=self.folder,
                root=os.geteuid() == 0,
            ),
            "utf-8",
        )
        self.nginx = await asyncio.create_subprocess_exec(
            str(self.config.nginx),
            "-e",
            "stderr",
            "-p",
            str(self.folder),
            "-c",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.config.start_timeout
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        host = "::1" if host == "::" else host
        while time.monotonic() < deadline:
            if self.nginx.returncode is not None:
                raise LocalError(f"nginx exited at start (see its messages above): {config_path}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(host, self.config.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise LocalError(f"nginx did not listen on port {self.config.port} in time")

    def write_state(self) -> dict[str, object]:
        """Write ``STATE_DIR/workers.json`` (and return it): nginx's and every worker's PID,
        relay port and admin URL."""
        state: dict[str, object] = {
            "egress": self.config.public_url,
            "bridge": self.bridge_line,
            "nginx_pid": self.nginx.pid if self.nginx is not None else None,
            "nginx_config": str(self.folder / "nginx.conf"),
            "workers": [
                {
                    "number": worker.number,
                    "pid": worker.process.pid if worker.process is not None else None,
                    "relay": f"ws://127.0.0.1:{worker.port}/v1/relay",
                    "admin": worker.admin_url,
                    "restarts": worker.restarts,
                }
                for worker in self.workers
            ],
        }
        temporary = self.config.state_dir / "workers.json.new"
        temporary.write_text(json.dumps(state, indent=1), "utf-8")
        temporary.replace(self.config.state_dir / "workers.json")
        return state

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart workers that exit until ``stop`` is set; :class:`LocalError` if nginx
        exits. :meth:`close` stops everything afterwards."""
        while True:  # one round per worker exit; ends on stop (or nginx's exit)
            waits = {
                asyncio.create_task(process.wait()): worker
                for worker in self.workers
                if (process := worker.process) is not None
            }
            nginx = self.nginx
            assert nginx is not None
            nginx_exit = asyncio.create_task(nginx.wait())
            stopped = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait(
                    {*waits, nginx_exit, stopped}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (*waits, nginx_exit, stopped):
                    task.cancel()
            if stop.is_set():
                return
            if nginx.returncode is not None:
                raise LocalError(f"nginx exited (status {nginx.returncode}): stopping the workers")
            for worker in self.workers:
                process = worker.process
                if process is not None and process.returncode is not None:
                    log.warning(
                        "egress worker %d exited (status %d); starting it again on its port",
                        worker.number,
                        process.returncode,
                    )
                    await asyncio.sleep(self.config.restart_delay)
                    worker.restarts += 1
                    await self._start_worker(worker)
            self.write_state()

    async def close(self, *, at_once: bool = False) -> None:
        """SIGTERM every worker (they drain; SIGINT with ``at_once``: they stop now), SIGKILL
        what is left after ``drain_seconds`` and a margin, then stop nginx."""
        running = [
            process
            for worker in self.workers
            if (process := worker.process) is not None and process.returncode is None
        ]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT if at_once else signal.SIGTERM)
        await _wait_or_kill(running, self.config.drain_seconds + 10.0)
        if self.nginx is not None and self.nginx.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.nginx.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            await _wait_or_kill([self.nginx], 10.0)


def workers_config(
    workers: str,
    *,
    host: str,
    port: int,
    state_dir: Path,
    public_url: str | None,
    drain_seconds: float,
    arguments: Sequence[str],
) -> WorkersConfig | None:
    """The supervisor's settings from ``ferry egress``'s options, ``None`` for one process.

    ``arguments`` is the command line after ``ferry`` (``sys.argv[1:]``): each worker runs it
    with its own ``--listen``, ``--admin-listen``, ``--ready-file`` and ``--workers=1``.
    Raises :class:`ConfigError` for a bad count or when nginx is not installed.
    """
    count = worker_count(workers)
    if count == 1:
        return None
    shown_host = f"[{host}]" if ":" in host else host
    return WorkersConfig(
        count=count,
        host=host,
        port=port,
        state_dir=state_dir,
        public_url=public_url or f"ws://{shown_host}:{port}/v1/relay",
        worker_arguments=without_worker_options(arguments),
        nginx=find_nginx(),
        drain_seconds=drain_seconds,
    )


class EgressWorkersRole:
    """``ferry egress --workers N`` as a role app (:class:`ferry.roles.RoleApp`): the first
    SIGTERM drains every worker, SIGINT or a second SIGTERM stops them at once."""

    def __init__(self, config: WorkersConfig) -> None:
        self.config = config
        self.supervisor = EgressWorkers(config)
        self._at_once = False

    async def start(self) -> dict[str, object]:
        """Start the workers and nginx; the ready file is ``workers.json``'s content."""
        supervisor = self.supervisor
        await supervisor.start()
        if supervisor.created_identity:
            console.print(f"Created a new egress identity in {self.config.state_dir}.")
        state = supervisor.write_state()
        console.print(
            f"ferry egress: {self.config.count} processes behind nginx at {state['egress']}"
        )
        console.print(f"Workers, PIDs and metrics: {self.config.state_dir / 'workers.json'}")
        console.print("Bridge line for clients:")
        typer.echo(supervisor.bridge_line)
        return state

    async def run(self, stop: asyncio.Event) -> None:
        """Supervise until ``stop``."""
        await self.supervisor.supervise(stop)

    def stop_now(self) -> None:
        """Stop the workers at once instead of draining them."""
        self._at_once = True
        for worker in self.supervisor.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)

    async def close(self) -> None:
        """Drain (or stop) every worker, then stop nginx."""
        await self.supervisor.close(at_once=self._at_once)


async def _wait_or_kill(processes: list[asyncio.subprocess.Process], timeout: float) -> None:
    """Wait for ``processes`` to exit for up to ``timeout`` seconds, then SIGKILL the rest."""
    waits = [asyncio.create_task(process.wait()) for process in processes]
    if waits:
        await asyncio.wait(waits, timeout=timeout)
    for process, wait in zip(processes, waits, strict=True):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await wait
        wait.cancel()
