"""A single-node KRaft Kafka broker on loopback, run from the cached jars.

Used by the test suite (every test that talks to Kafka talks to a real broker), the benchmarks and
``lagscaler demo``. The broker runs in combined mode (broker + controller) on free loopback ports,
with storage formatted in its own work directory. It is ready when a real client call succeeds,
not merely when the port opens. :meth:`LocalBroker.stop` sends SIGTERM and kills after a grace
period; :meth:`LocalBroker.start` can be called again to bring the same broker (same ports, same
data) back, which is how outage tests take the broker away and return it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from lagscaler.errors import UserError
from lagscaler_demo.localkafka.distribution import KafkaDistribution

T = TypeVar("T")

_LOG4J2 = """\
status = error
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class BrokerError(UserError):
    """The local broker could not be started; the message ends with its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run_coroutine_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even if an event loop is already running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="lagscaler-sync-bridge")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def probe(bootstrap: str, timeout: float = 5.0) -> int:  # noqa: ASYNC109 - per-call deadline for each step
    """Ask the cluster for its metadata; returns the number of brokers that answered."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - only the harness needs aiokafka here

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    quiet = logging.getLogger("aiokafka")  # connection refusals while the broker boots are expected
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        return len(cluster["brokers"])
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
        quiet.setLevel(level)


def new_cluster_id() -> str:
    """A random cluster id as Kafka writes them (base64url of 16 bytes), never starting with ``-``.

    One in 64 random ids starts with ``-``, which ``kafka-storage format -t ID`` reads as an option
    ("expected one argument"); Kafka's own ``Uuid.randomUuid()`` draws again in that case too.
    """
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


@dataclass(frozen=True)
class BrokerConfig:
    """What is configurable about the local broker.

    ``extra_listeners`` maps a listener name (``SSL``, ``SASL``...) to its security protocol; each
    gets its own free port and appears in :meth:`LocalBroker.address`. ``extra_properties`` are
    appended to ``server.properties`` (``{workdir}`` is replaced by the work directory), and
    ``format_args`` are passed to ``kafka-storage format`` (e.g. ``--add-scram``).

    A broker is its own controller unless ``controller`` names one (``<id>@host:port``): then it
    runs as a broker-only node ``node_id`` of that cluster (same ``cluster_id``) — see
    :meth:`LocalBroker.joining`, which is how tests get a second broker and a second coordinator.
    """

    extra_listeners: Mapping[str, str] = field(default_factory=dict)
    extra_properties: Mapping[str, str] = field(default_factory=dict)
    format_args: Sequence[str] = ()
    heap: str = "512m"
    log_level: str = "WARN"
    start_timeout: float = 90.0
    node_id: int = 1
    cluster_id: str | None = None
    controller: str | None = None


class LocalBroker:
    """A KRaft broker process on 127.0.0.1 with its own work directory."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        distribution: KafkaDistribution | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.config = config or BrokerConfig()
        self.distribution = distribution or KafkaDistribution()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="lagscaler-kafka-"))
        self.ports: dict[str, int] = {"PLAINTEXT": free_port(), "CONTROLLER": free_port()}
        for name in self.config.extra_listeners:
            self.ports[name] = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._formatted = False
        self.cluster_id = self.config.cluster_id or new_cluster_id()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return self.address("PLAINTEXT")

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    # -- lifecycle -------------------------------------------------------------------------------

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java:
            raise BrokerError("java is not on PATH; Kafka 4.x needs Java 17 or newer")
        return java

    def _write_config(self) -> Path:
        protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", **self.config.extra_listeners}
        joining = self.config.controller is not None
        listeners = ",".join(
            f"{n}://127.0.0.1:{p}" for n, p in self.ports.items() if not (joining and n == "CONTROLLER")
        )
        advertised = ",".join(f"{n}://127.0.0.1:{p}" for n, p in self.ports.items() if n != "CONTROLLER")
        node = self.config.node_id
        props = {
            "process.roles": "broker" if joining else "broker,controller",
            "node.id": str(node),
            "controller.quorum.voters": self.config.controller
            or f"{node}@127.0.0.1:{self.ports['CONTROLLER']}",
            "listeners": listeners,
            "advertised.listeners": advertised,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{n}:{p}" for n, p in protocols.items()),
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.flush.interval.messages": "9223372036854775807",
        }
        for key, value in self.config.extra_properties.items():
            props[key] = value.replace("{workdir}", str(self.workdir))
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2.format(level=self.config.log_level))
        return path

    def _jvm(self, *args: str, heap: str = "256m") -> list[str]:
        return [
            self._java(),
            f"-Xmx{heap}",
            "-XX:+UseSerialGC" if heap == "256m" else "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            self.distribution.classpath("broker"),
            *args,
        ]

    def _format(self, properties: Path) -> None:
        args = ["format", "-t", self.cluster_id, "-c", str(properties), *self.config.format_args]
        cmd = self._jvm("kafka.tools.StorageTool", *args)
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed: {(result.stdout + result.stderr).strip()}")
        self._formatted = True

    def start(self) -> Self:
        """Start (or restart) the broker and wait until a client call succeeds."""
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        properties = self._write_config()
        if not self._formatted:
            self._format(properties)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self._jvm("kafka.Kafka", str(properties), heap=self.config.heap),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal goes to us, and we stop it cleanly
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.start_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise BrokerError(
                    f"Kafka broker exited during start-up (exit {code}); log tail:\n{self.log_tail()}"
                )
            try:
                if run_coroutine_sync(probe(self.bootstrap, timeout=3.0)) >= 1:
                    return
            except Exception as exc:  # not up yet: keep polling until the deadline
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        self.stop()
        raise BrokerError(
            f"Kafka broker did not answer within {self.config.start_timeout:.0f}s ({last_error}); "
            f"log tail:\n{self.log_tail()}"
        )

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Data and ports are kept for a restart."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self) -> None:
        """Take the broker away abruptly (SIGKILL), as a crashed node would vanish."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing answers, as in a long GC pause.

        The broker and its in-process controller freeze together; after :meth:`resume` (tried after
        20 s) it answers at once.
        """
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a broker frozen by :meth:`pause` run again (SIGCONT)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGCONT)

    def joining(self, node_id: int, *, heap: str | None = None) -> LocalBroker:
        """A broker-only node ``node_id`` that joins this broker's cluster (this node stays the controller).

        It shares this broker's extra properties and listeners; start it after this one.
        """
        config = BrokerConfig(
            extra_listeners=self.config.extra_listeners,
            extra_properties=self.config.extra_properties,
            heap=heap or self.config.heap,
            log_level=self.config.log_level,
            start_timeout=self.config.start_timeout,
            node_id=node_id,
            cluster_id=self.cluster_id,
            controller=f"{self.config.node_id}@127.0.0.1:{self.ports['CONTROLLER']}",
        )
        return LocalBroker(config, distribution=self.distribution)

    def close(self) -> None:
        """Stop the broker and remove its work directory if we created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
