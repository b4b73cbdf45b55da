"""edgeflow.scenario.procs with a tiny stand-in child (a socket server that prints its address): start, read
the address, kill, restart on the same port, pause/resume, stop for certain, survive the starting thread."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from edgeflow.errors import ScenarioError
from edgeflow.scenario.procs import ChildProcess, rss_bytes, stop_all, wait_all

# Listens on 127.0.0.1:<argv[1]> (0: any), prints the address, answers each connection with b"ok".
_SERVER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(8)\n"
    "print('serving; listening on 127.0.0.1:%d' % s.getsockname()[1], flush=True)\n"
    "print('started', file=sys.stderr, flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'ok'); c.close()\n"
)


def _server(port: int = 0, log: Path | None = None) -> ChildProcess:
    return ChildProcess("stand-in", ["-c", _SERVER, str(port)], log_path=log)


def _ask(address: str, timeout_s: float = 5.0) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as c:
        return c.recv(2)


def _state(pid: int) -> str:
    """The process state letter from /proc (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_for(cond, timeout_s: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_address_log_and_stop(tmp_path: Path) -> None:
    p = _server(log=tmp_path / "x.log")
    try:
        address = p.wait_ready(30)
        assert address.startswith("127.0.0.1:") and _ask(address) == b"ok"
        assert p.running() and rss_bytes(p.pid)
        assert _wait_for(lambda: "started" in p.log)
    finally:
        code = p.stop(2.0)
    assert code == -signal.SIGTERM and not p.running()
    assert p.stop() == code  # idempotent
    with pytest.raises(ScenarioError, match="stopped"):
        p.restart(5)


def test_kill_then_restart_on_the_same_port() -> None:
    p = _server()
    try:
        address = p.wait_ready(30)
        first = p.pid
        p.kill()
        assert not p.running() and p.proc.returncode == -signal.SIGKILL
        with pytest.raises(OSError):
            _ask(address, 1.0)
        port = address.rsplit(":", 1)[1]
        assert p.restart(30, args=["-c", _SERVER, port]) == address
        assert p.pid != first and p.restarts == 1 and _ask(address) == b"ok"
    finally:
        stop_all([p], grace_s=2.0)
    assert not p.running()


def test_pause_and_resume() -> None:
    p = _server()
    try:
        address = p.wait_ready(30)
        p.pause()
        assert _wait_for(lambda: _state(p.pid) == "T")
        with pytest.raises(OSError):  # the kernel accepts the connection; nobody answers
            _ask(address, 0.5)
        p.resume()
        assert _wait_for(lambda: _state(p.pid) != "T")
        assert _ask(address) == b"ok"
        p.pause()  # stop() must get a paused child to act on SIGTERM
    finally:
        assert p.stop(5.0) == -signal.SIGTERM


def test_a_child_restarted_from_a_short_lived_thread_outlives_it() -> None:
    """PR_SET_PDEATHSIG follows the forking thread: children are forked by the module's launcher thread."""
    p = _server()
    try:
        address = p.wait_ready(30)
        port = address.rsplit(":", 1)[1]
        t = threading.Thread(target=p.restart, args=(30,), kwargs={"args": ["-c", _SERVER, port]})
        t.start()
        t.join(40)
        assert not t.is_alive() and p.address == address
        time.sleep(0.3)  # a child tied to the finished thread would be gone by now
        assert p.running() and _ask(address) == b"ok"
    finally:
        p.stop(2.0)


def test_a_child_that_exits_early_is_reported_with_its_log() -> None:
    p = ChildProcess("broken", ["-c", "import sys; print('boom: no model', file=sys.stderr); sys.exit(4)"])
    with pytest.raises(ScenarioError, match=r"exited before listening \(code 4\).*boom: no model"):
        wait_all([p], 30)
    p.stop(1.0)


def test_a_silent_child_times_out() -> None:
    p = ChildProcess("silent", ["-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(ScenarioError, match="not listening after 0.3 s"):
            p.wait_ready(0.3)
    finally:
        p.stop(1.0)
