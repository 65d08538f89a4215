"""The local stack is one process tree: killed, it leaves nothing running; stopped, it stops between
shifts; a second command on the same data directory stops at once, naming the first."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rossmann_local.local.broker import BINARY, LocalBroker
from rossmann_local.local.processes import DataDirInUse, data_dir_lock, free_port, stop_process_group

pytestmark = [pytest.mark.faults, pytest.mark.services]


def start_day(data: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "ROSSMANN_DATA_DIR": str(data), "TZ": "UTC"}
    return subprocess.Popen([sys.executable, "-m", "rossmann_local.local.day"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def shifts_sold(data: Path) -> int:
    try:
        with sqlite3.connect(data / "shops" / "shop_1.sqlite") as conn:
            return conn.execute("select count(*) from shifts where sales_recorded_at_utc is not null").fetchone()[0]
    except sqlite3.Error:
        return 0


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_sigterm_stops_the_day_between_shifts_and_sigkill_leaves_no_broker_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    day = start_day(data)
    wait_for(lambda: shifts_sold(data) >= 1)
    day.send_signal(signal.SIGTERM)
    out, err = day.communicate(timeout=120)
    assert day.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM before the shift of 2026-06-01 15:00"), err
    assert shifts_sold(data) == 1, "the morning finished, the afternoon never started"
    assert "Reports in ClickHouse" not in out

    day = start_day(data)
    pid_file = data / "kafka" / "broker.pid"
    wait_for(lambda: pid_file.exists() and alive(int(pid_file.read_text())) and shifts_sold(data) >= 1)
    broker_pid = int(pid_file.read_text())
    day.kill()
    day.communicate(timeout=30)
    wait_for(lambda: not alive(broker_pid), timeout=30)  # the parent-death signal stopped it

    day = start_day(data)
    out, err = day.communicate(timeout=300)
    assert day.returncode == 0, err
    assert "all              10/10      1989" in out and "75 confirmed, 75 read back on the topic" in out, out


def test_a_second_command_on_the_same_data_dir_stops_naming_the_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with data_dir_lock(data, "make dev"):
        with pytest.raises(DataDirInUse, match=r"in use by make dev \(pid \d+, since "), \
                data_dir_lock(data, "make day"):
            pass
        day = start_day(data)
        _out, err = day.communicate(timeout=120)
    assert day.returncode == 2
    assert err.strip().splitlines()[-1].startswith(f"configuration error: the data directory {data} is in use by "
                                                   "make dev"), err
    with data_dir_lock(data, "make day"):
        pass  # released with its holder


def test_a_broker_a_dead_run_left_on_the_data_dir_is_replaced(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    data.mkdir()
    stale = subprocess.Popen([str(BINARY), "start", "--only", "kafka", "--host", "127.0.0.1", "--kafka-port",
                              str(free_port()), "--data-dir", str(data)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (data / "broker.pid").write_text(f"{stale.pid}\n")
        time.sleep(0.5)
        with LocalBroker(data) as broker:
            assert stale.wait(timeout=15) is not None, "the stale broker was stopped"
            assert broker.pid != stale.pid and alive(broker.pid)
    finally:
        if stale.poll() is None:
            stale.kill()


def test_a_broker_lost_mid_day_stops_the_day_in_one_line_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    day = start_day(data)
    pid_file = data / "kafka" / "broker.pid"
    wait_for(lambda: pid_file.exists() and shifts_sold(data) >= 1)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    started = time.monotonic()
    _out, err = day.communicate(timeout=240)
    assert day.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped: the local Kafka broker (pid ") and "broker.log" in last, err
    assert "KAFKA_BOOTSTRAP_SERVERS" not in last, "a setting that was never set is not blamed"
    assert time.monotonic() - started < 120


def test_make_dev_moves_the_stand_in_to_a_free_port_when_its_usual_one_is_taken(tmp_path: Path) -> None:
    """Something else on 127.0.0.1:8765 must not stop make dev: the stand-in takes another port and the
    line that tells how to change the catalogue names it."""
    log = tmp_path / "dev.log"
    with socket.socket() as holder:
        with contextlib.suppress(OSError):  # already taken by something else: the same case
            holder.bind(("127.0.0.1", 8765))
            holder.listen()
        env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "ROSSMANN_SYNC_API_URL")}
        with log.open("w") as out:
            dev = subprocess.Popen([sys.executable, "-m", "rossmann_local.local.dev", "--port", str(free_port())],
                                   env={**env, "ROSSMANN_DATA_DIR": str(tmp_path / "data"), "TZ": "UTC"},
                                   stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "Sync API stand-in on" in log.read_text() or dev.poll() is not None)
            [line] = [x for x in log.read_text().splitlines() if "Sync API stand-in on" in x]
            url = line.split("Sync API stand-in on ")[1].split()[0]
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":8765"), line
            assert f"ROSSMANN_SYNC_API_URL={url} python -m rossmann_local.sync_api change" in line
        finally:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(timeout=90)
            except subprocess.TimeoutExpired:
                dev.kill()  # never left behind holding a port
                dev.wait()
                raise


def test_a_stop_signal_lost_at_start_is_sent_again_and_nothing_of_the_group_is_left() -> None:
    """How make dev stops dagster dev: a child that lost its first SIGINT (dagster dev does when it lands
    while its interpreter starts, and once left its webserver and daemon running after make dev had
    gone) gets a second one, and a grandchild that ignores SIGINT is killed with the group."""
    child_code = textwrap.dedent("""
        import signal, subprocess, sys, time
        ignores = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
        grandchild = subprocess.Popen([sys.executable, "-c", ignores])
        lost = []
        signal.signal(signal.SIGINT, lambda *_: lost.append(1) if not lost else sys.exit(0))
        print(grandchild.pid, flush=True)
        while True:
            time.sleep(0.05)
    """)
    child = subprocess.Popen([sys.executable, "-c", child_code], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        grandchild = int(child.stdout.readline())
        started = time.monotonic()
        stop_process_group(child, signal.SIGINT, timeout=30, again_after=1)
        assert child.returncode == 0, "the second SIGINT stopped it"
        assert time.monotonic() - started < 20, "not only after the timeout"
        wait_for(lambda: not alive(grandchild), timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.stdout.close()
