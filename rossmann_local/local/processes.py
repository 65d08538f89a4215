"""The local stack is one process tree: what it starts dies with it, one command uses a data
directory at a time, and SIGTERM stops the main command between shifts instead of mid-write."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from rossmann_local.settings import DATA_DIR, ConfigError

PR_SET_PDEATHSIG = 1
LOCK_FILE = "in-use.lock"
T = TypeVar("T")


def free_port(preferred: int | None = None) -> int:
    """A loopback port nothing listens on: ``preferred`` when it is free, else any free one."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return int(s.getsockname()[1])
    raise OSError("no free loopback port")


def die_with_parent() -> None:
    """``preexec_fn`` of every child: the kernel sends it SIGTERM when its parent dies, even by
    SIGKILL (Linux; elsewhere the child outlives a killed parent and is found stale on the next start)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background start inherits SIGINT ignored
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process_group(process: subprocess.Popen[Any], signum: signal.Signals, timeout: float = 60,
                       again_after: float = 10) -> None:
    """Stop a child started in a session of its own (``start_new_session``) and everything it started:
    ``signum``, once more after ``again_after`` seconds if it still runs (a Python process that gets a
    SIGINT while its interpreter starts reports the KeyboardInterrupt and goes on, the signal lost:
    seen with ``dagster dev``), then SIGKILL to whatever is left of its process group after ``timeout``
    (a webserver or daemon the killed parent would otherwise leave running)."""
    deadline, again = time.monotonic() + timeout, time.monotonic() + again_after
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)
    while process.poll() is None and time.monotonic() < deadline:
        if time.monotonic() >= again:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            again = deadline
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class DataDirInUse(ConfigError):
    """Another command holds the data directory."""


@contextlib.contextmanager
def data_dir_lock(data: Path, command: str) -> Iterator[None]:
    """Hold ``data`` for this command until the context ends; a second command stops with one line
    naming the holder. The lock is the kernel's (``flock``): it goes with the process, however it ends."""
    try:
        data.mkdir(parents=True, exist_ok=True)
        fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"{DATA_DIR}: cannot use {data} as the data directory ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 500, 0).decode(errors="replace").strip() or "another process"
            raise DataDirInUse(f"the data directory {data} is in use by {holder}; wait for it to end or stop it "
                               f"(or set {DATA_DIR} to another directory)") from None
        os.ftruncate(fd, 0)
        # bookkeeping, wall clock: when the holder started, for the message a second command prints
        os.pwrite(fd, f"{command} (pid {os.getpid()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def data_dir_holder(data: Path) -> str | None:
    """Which command holds ``data`` now (as it wrote itself in the lock file), or None."""
    try:
        fd = os.open(data / LOCK_FILE, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 500, 0).decode(errors="replace").strip() or "another process"
    else:
        return None
    finally:
        os.close(fd)


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived; raised at the next point where stopping loses nothing."""


class GracefulStop:
    """While active, SIGTERM and SIGINT only record the request: the work runs in a worker thread
    (so Dagster cannot turn the signal into an interrupt in the middle of a shift), and ``check``
    raises ``StopRequested`` between shifts. A second signal stops at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread, the main thread free to take signals meanwhile."""
        outcome: dict[str, object] = {}

        def work() -> None:
            try:
                outcome["value"] = fn()
            except BaseException as exc:  # handed back to the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=work, name="rossmann-work")
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["value"]  # type: ignore[return-value]

    def check(self, where: str) -> None:
        if self.requested is not None:
            raise StopRequested(f"stopped by {self.requested} {where}")
