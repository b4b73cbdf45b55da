"""Link emulation: set rate vs measured throughput (userspace proxy and kernel tbf), delay, loss, outages,
trace following, gRPC through the proxy, the process mode, and the pure link model.

Throughput is the receiver's steady-state rate: bytes after the first 20 % over the time they took (start-up
transients such as TCP slow start and the first bucket of credit are left out). Everything runs on
127.0.0.1 or inside namespaces the kernel backend creates and removes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest

from edgeflow.core.traces import constant, steps
from edgeflow.netem.kernel import KernelLinkEmulator, available
from edgeflow.netem.link import LinkClock, LinkSpec, Outage, Schedule
from edgeflow.netem.userspace import LinkEmulator

REPO = Path(__file__).resolve().parents[2]
KERNEL_OK, KERNEL_WHY = available()
needs_kernel = pytest.mark.skipif(not KERNEL_OK, reason=f"kernel link emulation unavailable: {KERNEL_WHY}")
BACKENDS = [pytest.param(LinkEmulator, id="userspace"),
            pytest.param(KernelLinkEmulator, id="kernel", marks=needs_kernel)]
TIMEOUT_S = 15.0


class Sink:
    """Accepts connections on 127.0.0.1 and counts what arrives: (clock(), cumulative bytes) per recv."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.marks: list[tuple[float, int]] = []
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with self.sock:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
        with conn:
            conn.settimeout(TIMEOUT_S)
            total = 0
            try:
                while data := conn.recv(1 << 20):
                    total += len(data)
                    self.marks.append((self.clock(), total))
            finally:
                self.done.set()

    def steady_bps(self, skip: float = 0.2) -> float:
        total = self.marks[-1][1]
        t0, b0 = next(m for m in self.marks if m[1] >= skip * total)
        return (total - b0) * 8 / (self.marks[-1][0] - t0)


def send(port: int, nbytes: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as s:
        block = b"\0" * 65536
        for _ in range(-(-nbytes // len(block))):
            s.sendall(block)


class Echo:
    """Echoes every byte back, one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


def ping(s: socket.socket, nbytes: int = 64) -> float:
    t = time.monotonic()
    s.sendall(b"p" * nbytes)
    got = 0
    while got < nbytes:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed")
        got += len(data)
    return time.monotonic() - t


# --- throughput --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rate_mbit", [2, 10, 50])
def test_measured_rate_within_10_percent(backend, rate_mbit):
    rate = rate_mbit * 1e6
    sink = Sink()
    with backend(("127.0.0.1", sink.port), uplink=LinkSpec.constant(rate)) as emu:
        send(emu.port, int(rate / 8 * 1.5))  # 1.5 s at the set rate
        assert sink.done.wait(TIMEOUT_S)
        assert emu.current_rate_bps("uplink") == pytest.approx(rate, rel=0.01)
    assert sink.steady_bps() == pytest.approx(rate, rel=0.10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trace_steps_change_the_measured_rate(backend):
    """20 Mbit/s for 1 s, then 5 Mbit/s: the rate measured in each window follows."""
    trace = steps([(1.0, 20e6), (1.0, 5e6)])
    sink = Sink()
    emu = backend(("127.0.0.1", sink.port), uplink=LinkSpec(rate=trace))
    sink.clock = emu.now  # link time, in which the trace's steps fall
    with emu:
        sender = threading.Thread(target=send, args=(emu.port, int(20e6 / 8 + 5e6 / 8 * 0.9)), daemon=True)
        sender.start()
        assert sink.done.wait(TIMEOUT_S)
        sender.join(TIMEOUT_S)

    def rate_in(a: float, b: float) -> float:
        inside = [m for m in sink.marks if a <= m[0] <= b]
        return (inside[-1][1] - inside[0][1]) * 8 / (inside[-1][0] - inside[0][0])

    assert rate_in(0.3, 0.95) == pytest.approx(20e6, rel=0.10)
    assert rate_in(1.15, 1.8) == pytest.approx(5e6, rel=0.10)


def test_unshaped_proxy_carries_bulk_data(echo):
    """No rate: bytes go through unchanged (the benchmark measures how fast)."""
    with LinkEmulator(("127.0.0.1", echo.port)) as emu, socket.create_connection(("127.0.0.1", emu.port)) as s:
        payload = os.urandom(4 << 20)
        threading.Thread(target=s.sendall, args=(payload,), daemon=True).start()
        got = bytearray()
        s.settimeout(TIMEOUT_S)
        while len(got) < len(payload):
            got += s.recv(1 << 20)
        assert bytes(got) == payload
        assert emu.current_rate_bps() is None


# --- delay, loss -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_delay_adds_one_way_delay_each_way(backend, echo):
    with backend(("127.0.0.1", echo.port), uplink=LinkSpec.constant(None, delay_s=0.04),
                 downlink=LinkSpec.constant(None, delay_s=0.04)) as emu:
        with socket.create_connection(("127.0.0.1", emu.port), timeout=TIMEOUT_S) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = [ping(s) for _ in range(5)]
    assert statistics.median(rtts) == pytest.approx(0.08, abs=0.012)
    assert min(rtts) >= 0.079


def test_delay_is_pipelined_not_a_throughput_cut():
    """10 Mbit/s with 100 ms one-way delay still carries 10 Mbit/s."""
    sink = Sink()
    with LinkEmulator(("127.0.0.1", sink.port), uplink=LinkSpec.constant(10e6, delay_s=0.1)) as emu:
        send(emu.port, int(10e6 / 8 * 1.5))
        assert sink.done.wait(TIMEOUT_S)
    assert sink.steady_bps() == pytest.approx(10e6, rel=0.10)


def test_loss_costs_a_retransmission_timeout(echo):
    """With loss, some round trips take one extra RTO (max(0.2, 2 x delay)); none is lost."""
    spec = LinkSpec.constant(None, delay_s=0.01, loss=0.3, seed=3)
    with LinkEmulator(("127.0.0.1", echo.port), uplink=spec) as emu:
        with socket.create_connection(("127.0.0.1", emu.port), timeout=TIMEOUT_S) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = [ping(s, 100) for _ in range(12)]
    slow = [r for r in rtts if r > 0.15]
    assert 1 <= len(slow) <= 9
    assert all(0.2 <= r < 0.3 for r in slow) and all(r < 0.05 for r in rtts if r <= 0.15)


# --- outages -----------------------------------------------------------------------------------------------


def test_outage_stalls_then_resumes(echo):
    with LinkEmulator(("127.0.0.1", echo.port), outages=[Outage(0.3, 0.6, refuse_new=False)]) as emu:
        with socket.create_connection(("127.0.0.1", emu.port), timeout=TIMEOUT_S) as s:
            assert ping(s) < 0.1
            time.sleep(max(0.0, 0.4 - emu.now()))
            assert emu.current_rate_bps() == 0.0
            t = ping(s)  # sent at ~0.4 s, inside the outage
            assert emu.now() >= 0.9 and t >= 0.45
            assert ping(s) < 0.1
        assert emu.stats().connections_refused == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_outage_refuses_new_connections_and_resets_open_ones(backend, echo):
    with backend(("127.0.0.1", echo.port), outages=[Outage(0.3, 0.5, reset_existing=True)]) as emu:
        s = socket.create_connection(("127.0.0.1", emu.port), timeout=TIMEOUT_S)
        assert ping(s) < 0.1
        time.sleep(max(0.0, 0.4 - emu.now()))
        with pytest.raises((ConnectionError, OSError)):
            ping(s)  # reset at the outage start
        s.close()
        with pytest.raises((ConnectionError, OSError)):  # refused: at the connect or at the first exchange
            with socket.create_connection(("127.0.0.1", emu.port), timeout=TIMEOUT_S) as refused:
                ping(refused)
        time.sleep(max(0.0, 0.85 - emu.now()))
        with socket.create_connection(("127.0.0.1", emu.port), timeout=TIMEOUT_S) as later:
            assert ping(later) < 0.1
        st = emu.stats()
    assert st.connections_refused == 1 and st.connections_reset == 1


# --- gRPC, concurrency, process mode ------------------------------------------------------------------------


@pytest.fixture
def grpc_echo() -> Iterator[int]:
    server = grpc.server(ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 8 << 20)])
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None)


def test_grpc_through_the_proxy(grpc_echo):
    """Unary calls, concurrent and large, through a shaped, delayed link; the link's rate shows in the time."""
    spec = LinkSpec.constant(20e6, delay_s=0.01)
    options = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20),
               ("grpc.enable_http_proxy", 0)]
    with LinkEmulator(("127.0.0.1", grpc_echo), uplink=spec, downlink=spec) as emu:
        with grpc.insecure_channel(emu.address, options=options) as channel:
            call = channel.unary_unary("/test.Echo/Echo")
            assert call(b"hello", timeout=TIMEOUT_S) == b"hello"
            with ThreadPoolExecutor(8) as pool:
                small = [os.urandom(10_000) for _ in range(16)]
                assert list(pool.map(lambda p: call(p, timeout=TIMEOUT_S), small)) == small
            big = os.urandom(1 << 20)
            t = time.monotonic()
            assert call(big, timeout=TIMEOUT_S) == big
            assert time.monotonic() - t >= 2 * (1 << 20) * 8 / 20e6 * 0.9  # up and down at 20 Mbit/s
        st = emu.stats()
    assert st.uplink_bytes > (1 << 20) and st.downlink_bytes > (1 << 20)


def test_many_concurrent_connections(echo):
    with LinkEmulator(("127.0.0.1", echo.port), uplink=LinkSpec.constant(50e6)) as emu:
        def one(i: int) -> bytes:
            with socket.create_connection(("127.0.0.1", emu.port), timeout=TIMEOUT_S) as s:
                msg = f"conn {i} ".encode() * 1000
                s.sendall(msg)
                s.shutdown(socket.SHUT_WR)  # half-close travels through; the echo still answers
                got = bytearray()
                while data := s.recv(65536):
                    got += data
                return bytes(got) == msg

        with ThreadPoolExecutor(16) as pool:
            assert all(pool.map(one, range(32)))
        deadline = time.monotonic() + 5
        while emu.stats().connections_open and time.monotonic() < deadline:
            time.sleep(0.02)
        st = emu.stats()
    assert st.connections_total == 32 and st.connections_open == 0


def test_process_mode_prints_address_and_stats(echo):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "edgeflow.netem.userspace", "--target", f"127.0.0.1:{echo.port}",
                             "--rate-mbit", "20", "--delay-ms", "5"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        with socket.create_connection(("127.0.0.1", int(line.rsplit(":", 1)[1])), timeout=TIMEOUT_S) as s:
            assert 0.01 <= ping(s, 1000) < 0.2
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["uplink_bytes"] == 1000 and stats["downlink_bytes"] == 1000


@needs_kernel
def test_kernel_backend_leaves_no_namespace_behind():
    emu = KernelLinkEmulator(("127.0.0.1", 9), uplink=LinkSpec.constant(5e6))
    emu.start()
    names = (emu.link.client_ns, emu.link.server_ns)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert all(n in listed for n in names)
    emu.stop()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)


# --- the link model (pure, no sockets) ------------------------------------------------------------------------


def test_link_clock_serialises_a_shared_fifo():
    clock = LinkClock(LinkSpec(rate=constant(8e6), delay_s=0.1, burst_s=0.0))
    assert clock.send(0.0, 1000) == pytest.approx(0.001 + 0.1)  # 8000 bits at 8 Mbit/s, then the delay
    assert clock.send(0.0, 1000) == pytest.approx(0.002 + 0.1)  # queued behind the first
    assert clock.send(1.0, 1000) == pytest.approx(1.001 + 0.1)  # idle link: no banked credit


def test_link_clock_skips_outages_and_banks_no_idle_credit():
    schedule = Schedule([Outage(1.0, 0.5)])
    clock = LinkClock(LinkSpec(rate=constant(8e6), burst_s=0.005), schedule)
    assert clock.send(0.995, 20_000) == pytest.approx(1.5 + 0.015)  # 5 ms before the outage, 15 ms after
    assert clock.rate_at(1.2) == 0.0 and clock.rate_at(2.0) == 8e6
    clock = LinkClock(LinkSpec(rate=constant(8e6), burst_s=0.005))
    assert clock.send(10.0, 5000) == pytest.approx(10.005)  # idle for long: no banked credit, 5 ms on the air
    assert clock.send(10.008, 1000) == pytest.approx(10.008)  # idle 3 ms (< burst_s): continues from 10.005
    assert clock.send(10.0085, 9000) == pytest.approx(10.017)  # busy link: queued behind, from 10.008
    unshaped = LinkClock(LinkSpec(delay_s=0.2), schedule)
    assert unshaped.send(0.9, 10**9) == pytest.approx(1.5)  # 0.9 + 0.2 lands in the outage: its end
    with pytest.raises(Exception):
        Schedule([Outage(0, 1), Outage(0.5, 1)])
