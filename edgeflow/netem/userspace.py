"""The userspace link emulator: a TCP proxy on 127.0.0.1 that shapes each direction (no root needed).

    with LinkEmulator(target=("127.0.0.1", port), uplink=LinkSpec.constant(10e6, delay_s=0.02),
                      downlink=LinkSpec(rate=read_trace("lte.log"), delay_s=0.02)) as emu:
        grpc.insecure_channel(emu.address)      # every connection to emu.address goes through the link

Client -> target bytes take the ``uplink``, target -> client bytes the ``downlink``; each direction is one
bottleneck shared by all connections (see :mod:`edgeflow.netem.link` for the model). The proxy is an asyncio
loop in a background thread of the calling process; ``python -m edgeflow.netem`` runs the same thing as its own
process. Full duplex and half-close are forwarded, so HTTP/2 (gRPC) works unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

from edgeflow.errors import ConfigError
from edgeflow.netem.link import LinkClock, LinkSpec, Outage, Schedule

__all__ = ["LinkEmulator", "LinkStats", "parse_address"]

_STREAM_LIMIT = 1 << 20  # asyncio buffer per stream: above the largest read, so a read never waits on it
_MAX_SLEEP_S = 0.5  # sleeps are re-checked at least this often (a zero-rate trace books the link forever)


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"`` or ``(host, port)`` -> ``(host, port)``.

    Raises:
        ConfigError: not a host and an integer port.
    """
    if isinstance(address, tuple):
        return address[0], int(address[1])
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {address!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class LinkStats:
    """Counters of a running emulator (bytes are counted when delivered)."""

    uplink_bytes: int = 0
    downlink_bytes: int = 0
    connections_total: int = 0
    connections_open: int = 0
    connections_refused: int = 0
    connections_reset: int = 0
    connect_failures: int = 0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with RST (SO_LINGER 0) rather than FIN, as a broken link would look to the peer."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Pipe:
    """One direction of one connection: read, book the link, hold until due, write in order."""

    def __init__(self, emu: LinkEmulator, clock: LinkClock, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, direction: str):
        self.emu, self.clock, self.reader, self.writer, self.direction = emu, clock, reader, writer, direction
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued_bytes = 0
        self.last_deliver_s = 0.0
        self.wake = asyncio.Event()
        self.space = asyncio.Event()
        rate = clock.spec.rate
        peak_bps = 1e9 if rate is None else float(rate.rate_bps.max())
        in_flight_s = clock.spec.delay_s + clock.spec.effective_rto_s + 0.25
        self.high_water = int(min(32 << 20, max(1 << 20, peak_bps / 8 * in_flight_s)))

    def _push(self, deliver_s: float, data: bytes | None) -> None:
        self.last_deliver_s = max(deliver_s, self.last_deliver_s)
        self.queue.append((self.last_deliver_s, data))
        self.queued_bytes += len(data) if data else 0
        self.wake.set()

    async def pump_in(self) -> None:
        clock, queue_s = self.clock, self.emu.queue_s
        while True:
            now = self.emu.now()
            ahead = clock.backlog_s(now) - queue_s
            if ahead > 0:  # the link is booked far enough ahead: leave the bytes in the socket (backpressure)
                await asyncio.sleep(min(ahead, _MAX_SLEEP_S))
                continue
            if self.queued_bytes > self.high_water:  # the receiver is slow: stop reading
                self.space.clear()
                await self.space.wait()
                continue
            data = await self.reader.read(clock.chunk_bytes(now))
            now = self.emu.now()
            if not data:  # EOF travels like a last, empty chunk
                self._push(clock.schedule.skip(now + clock.spec.delay_s), None)
                return
            self._push(clock.send(now, len(data)), data)

    async def pump_out(self) -> None:
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            wait = self.queue[0][0] - self.emu.now()
            if wait > 0:
                await asyncio.sleep(min(wait, _MAX_SLEEP_S))
                continue
            now, due, eof = self.emu.now(), [], False
            while self.queue and self.queue[0][0] <= now:
                data = self.queue.popleft()[1]
                if data is None:
                    eof = True
                    break
                due.append(data)
            if due:
                nbytes = sum(map(len, due))
                self.writer.writelines(due)
                self.queued_bytes -= nbytes
                self.emu._count(self.direction, nbytes)
                self.space.set()
                await self.writer.drain()
            if eof:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return


class _Connection:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter):
        self.client, self.upstream = client, upstream

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)


class LinkEmulator:
    """A shaping TCP proxy in front of ``target``.

    Args:
        target: where connections go, ``(host, port)`` or ``"host:port"``.
        uplink: client -> target direction.
        downlink: target -> client direction.
        outages: scheduled outages (seconds after :meth:`start`), applied to both directions.
        listen: address to listen on; port 0 picks a free port.
        queue_s: how far ahead of now a direction may be booked before the proxy stops reading (the
            bottleneck's queue; beyond it, TCP backpressure holds the sender).
        connect_timeout_s: limit for connecting to the target; on failure the client connection is reset.
        listen_socket: an already bound socket to listen on instead of ``listen`` (the kernel backend passes
            one created in a network namespace).
        socket_factory: makes the unconnected socket used to reach the target (default: a plain TCP socket).

    Raises:
        ConfigError: a bad address or overlapping outages.
    """

    def __init__(self, target: str | tuple[str, int], uplink: LinkSpec = LinkSpec(), downlink: LinkSpec = LinkSpec(),
                 *, outages: Sequence[Outage] = (), listen: str | tuple[str, int] = ("127.0.0.1", 0),
                 queue_s: float = 0.05, connect_timeout_s: float = 10.0, listen_socket: socket.socket | None = None,
                 socket_factory: Callable[[], socket.socket] | None = None):
        self.target = parse_address(target)
        self.listen = parse_address(listen)
        self.uplink, self.downlink = uplink, downlink
        self.schedule = Schedule(outages)
        self.queue_s = queue_s
        self.connect_timeout_s = connect_timeout_s
        self._listen_socket = listen_socket
        self._socket_factory = socket_factory
        self._stats = LinkStats()
        self._t0 = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._clocks = {"uplink": LinkClock(uplink, self.schedule), "downlink": LinkClock(downlink, self.schedule)}
        self.port: int | None = None

    # --- public ------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` clients connect to (after :meth:`start`)."""
        if self.port is None:
            raise RuntimeError("LinkEmulator is not started")
        return f"{self.listen[0]}:{self.port}"

    def now(self) -> float:
        """Link time: seconds since :meth:`start`."""
        return time.monotonic() - self._t0

    def start(self, timeout_s: float = 10.0) -> int:
        """Starts the proxy thread and returns the port it listens on.

        Raises:
            OSError: the listen address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("LinkEmulator already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"netem->{self.target[1]}", daemon=True)
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._astart(), self._loop).result(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.port

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stops listening, closes every connection and joins the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout_s)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._loop = self._thread = None

    def __enter__(self) -> LinkEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> LinkStats:
        """A snapshot of the counters."""
        return LinkStats(**vars(self._stats))

    def set_specs(self, uplink: LinkSpec | None = None, downlink: LinkSpec | None = None, timeout_s: float = 10.0) -> None:
        """Change a direction's shaping now (its trace, if any, is read at link time from here on), e.g. a rate drop
        a test makes happen at an event instead of at a time. Bytes already booked keep their delivery times."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("LinkEmulator is not started")
        done = threading.Event()

        def swap() -> None:
            for direction, spec in (("uplink", uplink), ("downlink", downlink)):
                if spec is not None:
                    self._clocks[direction].spec = spec
                    setattr(self, direction, spec)
            done.set()

        loop.call_soon_threadsafe(swap)
        if not done.wait(timeout_s):
            raise RuntimeError("LinkEmulator did not apply the new specs")

    def current_rate_bps(self, direction: str = "downlink") -> float | None:
        """The rate set now on ``"uplink"`` or ``"downlink"``: 0 in an outage, ``None`` when unshaped."""
        return self._clocks[direction].rate_at(self.now())

    # --- loop thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._loop is not None
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:  # finish what stop() cancelled (a stalled pipe's pumps): closing with them pending prints noise
                pending = asyncio.all_tasks(loop)
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            finally:
                loop.close()

    def _count(self, direction: str, nbytes: int) -> None:
        if direction == "uplink":
            self._stats.uplink_bytes += nbytes
        else:
            self._stats.downlink_bytes += nbytes

    async def _astart(self) -> int:
        loop = asyncio.get_running_loop()
        if self._listen_socket is not None:
            self._server = await asyncio.start_server(self._serve, sock=self._listen_socket, limit=_STREAM_LIMIT)
        else:
            self._server = await asyncio.start_server(self._serve, self.listen[0], self.listen[1],
                                                      limit=_STREAM_LIMIT, reuse_address=True)
        self._t0 = time.monotonic()
        for o in self.schedule.outages:
            if o.reset_existing:
                self._timers.append(loop.call_later(o.start_s, self._reset_all))
        return int(self._server.sockets[0].getsockname()[1])

    async def _astop(self) -> None:
        for h in self._timers:
            h.cancel()
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            for w in (c.client, c.upstream):
                w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)

    def _reset_all(self) -> None:
        for c in list(self._conns):
            c.reset()
            self._stats.connections_reset += 1

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._socket_factory is None:
            return await asyncio.open_connection(*self.target, limit=_STREAM_LIMIT)
        sock = self._socket_factory()
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, self.target)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=_STREAM_LIMIT)

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        # Runs the connection in a task of our own: asyncio's stream server reports a cancelled handler as an
        # error, and stop() cancels handlers.
        task = asyncio.ensure_future(self._handle(creader, cwriter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self._stats.connections_total += 1
        outage = self.schedule.at(self.now())
        if outage is not None and outage.refuse_new:
            self._stats.connections_refused += 1
            _reset(cwriter)
            return
        try:
            ureader, uwriter = await asyncio.wait_for(self._connect(), self.connect_timeout_s)
        except (OSError, asyncio.TimeoutError):
            self._stats.connect_failures += 1
            _reset(cwriter)
            return
        await self._relay(creader, cwriter, ureader, uwriter)

    async def _relay(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter,
                     ureader: asyncio.StreamReader, uwriter: asyncio.StreamWriter) -> None:
        for w in (cwriter, uwriter):
            with contextlib.suppress(OSError, AttributeError):
                w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(cwriter, uwriter)
        self._conns.add(conn)
        self._stats.connections_open += 1
        up = _Pipe(self, self._clocks["uplink"], creader, uwriter, "uplink")
        down = _Pipe(self, self._clocks["downlink"], ureader, cwriter, "downlink")
        pumps: list[Awaitable[None]] = [up.pump_in(), up.pump_out(), down.pump_in(), down.pump_out()]
        tasks = [asyncio.ensure_future(p) for p in pumps]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = any(t.exception() is not None for t in done if not t.cancelled())
            if failed:
                conn.reset()
            else:
                for w in (cwriter, uwriter):
                    w.close()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (cwriter, uwriter):
                if not w.is_closing():
                    w.close()
            self._conns.discard(conn)
            self._stats.connections_open -= 1


if __name__ == "__main__":  # python -m edgeflow.netem.userspace ... == python -m edgeflow.netem --backend userspace
    from edgeflow.netem.__main__ import main

    raise SystemExit(main())
