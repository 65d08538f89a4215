"""The no-service Kafka: the broker binary shipped in the PyPI package ``noida-db``, on loopback.

Only its binary is used (not its Python wrapper): started on a free port with its data in a
directory of ours, ready when ``AdminClient.list_topics()`` answers, stopped by SIGTERM. It dies
with the process that started it (parent-death signal), and a broker left on the same data
directory by a process that died anyway (no parent-death signal off Linux) is stopped first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import noida_db
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from rossmann_local.local.processes import die_with_parent, free_port
from rossmann_local.resources.kafka import CLIENT_LOG

BINARY = Path(noida_db.__file__).parent / "noida-db"


class LocalBroker:
    """A Kafka-protocol broker on 127.0.0.1 for as long as the context lasts (or start/stop)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._resume: threading.Timer | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    def stop_stale(self) -> int | None:
        """Stop a broker that a dead run left on this data directory; returns its pid, if there was one."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if pid == self.pid or BINARY.name.encode() not in b" ".join(cmdline) or \
                str(self.data_dir).encode() not in cmdline:
            return None  # gone, ours, or another program that reuses the pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10  # bookkeeping, wall clock: how long a real process may take to stop
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        return pid

    def start(self, timeout: float = 30.0) -> LocalBroker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stop_stale()
        log = (self.data_dir / "broker.log").open("ab")
        self._process = subprocess.Popen(
            [str(BINARY), "start", "--only", "kafka", "--host", "127.0.0.1", "--kafka-port", str(self.port),
             "--data-dir", str(self.data_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
        log.close()
        self.pid_file.write_text(f"{self._process.pid}\n")
        # librdkafka's log goes to Python logging (silent by default): while the broker boots, every
        # "Connection refused" would otherwise print to stderr as if something had failed.
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": CLIENT_LOG})
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the local Kafka broker exited with {self._process.returncode}; "
                                   f"see {self.data_dir / 'broker.log'}")
            try:
                admin.list_topics(timeout=1)
                return self
            except KafkaException:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the local Kafka broker did not answer on {self.bootstrap_servers} "
                                       f"within {timeout:g} s") from None
                time.sleep(0.1)

    def pause(self, seconds: float) -> None:
        """Stop the broker answering (SIGSTOP) for ``seconds`` of wall time, as a broker stuck in a
        long pause would: clients wait and retry; nothing is lost. A scenario's broker pause."""
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("the local broker is not running: it cannot be paused")
        self.resume()
        self._process.send_signal(signal.SIGSTOP)
        self._resume = threading.Timer(seconds, self.resume)
        self._resume.daemon = True
        self._resume.start()

    def resume(self) -> None:
        """End a pause now (also before stopping: a stopped process cannot act on SIGTERM)."""
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def check_alive(self) -> None:
        """Raise, in one line, if the broker this object started has exited (a stock step would
        otherwise wait out its delivery timeout and a sensor tick its retries)."""
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"the local Kafka broker (pid {self._process.pid}) exited with "
                               f"{self._process.returncode}; see {self.data_dir / 'broker.log'}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed (the fault tests use it)."""
        self.resume()
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
