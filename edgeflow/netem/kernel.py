"""Kernel-shaped links (root only): ``tc tbf`` on a veth pair between two private network namespaces.

    ok, why = available()                         # (False, reason) where not root or namespaces fail
    with KernelLinkEmulator(("127.0.0.1", port), uplink=LinkSpec(rate=trace), downlink=...) as emu:
        connect(emu.address)                      # same surface as LinkEmulator

Topology: nothing is added to the caller's namespace but a listening socket on 127.0.0.1.

    client -> entry proxy (127.0.0.1, delay/loss/outages in userspace)
           -> socket in namespace "c" (169.254.77.1) =veth, tbf egress each way= namespace "s" (169.254.77.2)
           -> relay socket in "s" -> target (127.0.0.1)

The proxies create their sockets inside the namespaces by switching one short-lived thread into the namespace
(``setns``); a socket stays in the namespace it was created in. The namespaces have no route beyond the /30
link-local pair, so traffic cannot leave them. The veth MTU is 1500 (with loopback's 65536, packets exceed the
tbf bucket and transfers hang). This kernel has no netem, so delay, loss and outages stay in the entry proxy;
the tbf rate follows the trace by ``tc qdisc change`` every ``update_s`` (the mean rate over the next
interval, at least 8 kbit/s: tbf has no zero rate). Teardown (namespace deletion removes the veth too) runs on
``stop()``, on exit from a ``with`` block, and at interpreter exit; namespaces left by a killed process are
removed by :func:`cleanup_stale` (called on every start).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import weakref
from dataclasses import replace
from typing import Sequence

from edgeflow.core.traces import BandwidthTrace
from edgeflow.errors import ScenarioError
from edgeflow.netem.link import LinkSpec, Outage, Schedule
from edgeflow.netem.userspace import LinkEmulator, LinkStats, parse_address

__all__ = ["available", "cleanup_stale", "KernelLink", "KernelLinkEmulator", "CLIENT_IP", "SERVER_IP"]

CLIENT_IP, SERVER_IP = "169.254.77.1", "169.254.77.2"  # every link has its own namespaces: no clash
MIN_RATE_BPS = 8000
# Rates are goodput (what the traces measured and what the userspace backend shapes); tbf counts whole
# frames: 1448 payload bytes (MSS with TCP timestamps) travel in 1514-byte Ethernet frames.
WIRE_OVERHEAD = 1514 / 1448
_CLONE_NEWNET = 0x40000000
_NS_RE = re.compile(r"^efnet-(\d+)-[0-9a-f]{6}-[cs]$")
_OPEN: weakref.WeakSet[KernelLink] = weakref.WeakSet()
_probe: tuple[bool, str] | None = None


def _run(*args: str, timeout_s: float = 10.0) -> None:
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0:
        raise ScenarioError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")


def _socket_in_netns(ns: str) -> socket.socket:
    """A TCP socket created inside namespace ``ns`` (by a thread that enters it and then ends)."""
    out: dict[str, object] = {}

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            out["sock"] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except BaseException as e:  # re-raised in the caller's thread
            out["error"] = e

    t = threading.Thread(target=work, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["sock"]  # type: ignore[return-value]


def cleanup_stale() -> list[str]:
    """Deletes namespaces this package made in processes that no longer exist; returns their names."""
    try:
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    removed = []
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NS_RE.match(name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)  # signal 0: only asks whether the process exists
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(ScenarioError, subprocess.TimeoutExpired):
            _run("ip", "netns", "del", name)
            removed.append(name)
    return removed


def available() -> tuple[bool, str]:
    """Whether the kernel backend works here, and why not (probes once: builds and removes a link)."""
    global _probe
    if _probe is None:
        if os.geteuid() != 0:
            _probe = (False, "needs root (network namespaces and tc); running as uid %d" % os.geteuid())
        elif not (shutil.which("ip") and shutil.which("tc")):
            _probe = (False, "iproute2 ('ip' and 'tc') not found on PATH")
        else:
            try:
                with KernelLink(None, BandwidthTrace([0.0], [10e6], 1.0)):
                    pass
                _probe = (True, "ok")
            except (ScenarioError, OSError, subprocess.TimeoutExpired) as e:
                _probe = (False, f"cannot build a namespace + veth + tbf link: {e}")
    return _probe


class KernelLink:
    """Two namespaces joined by a veth pair; each end's egress is shaped by tbf following a trace.

    Args:
        uplink: rate from the client namespace to the server namespace; ``None`` leaves it unshaped.
        downlink: rate back.
        update_s: how often the tbf rate is changed to follow the traces.
        trace_offset_s: where in the traces link time 0 falls (per direction: uplink, downlink).
    """

    def __init__(self, uplink: BandwidthTrace | None, downlink: BandwidthTrace | None, *, update_s: float = 0.1,
                 trace_offset_s: tuple[float, float] = (0.0, 0.0)):
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.client_ns, self.server_ns = f"efnet-{tag}-c", f"efnet-{tag}-s"
        suffix = tag[-6:]
        self._dev = {"uplink": (self.client_ns, f"ef{suffix}c"), "downlink": (self.server_ns, f"ef{suffix}s")}
        self._traces = {"uplink": uplink, "downlink": downlink}
        self._offsets = {"uplink": trace_offset_s[0], "downlink": trace_offset_s[1]}
        self.update_s = update_s
        self.t0 = time.monotonic()  # link time 0; the emulator moves it to its own start
        self._applied: dict[str, float | None] = {"uplink": None, "downlink": None}
        self._batch: dict[str, subprocess.Popen[str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created: list[str] = []
        self.tc_errors: list[str] = []

    # --- setup / teardown ---------------------------------------------------------------------------------

    def open(self) -> KernelLink:
        """Creates the namespaces, veth pair and qdiscs, and starts following the traces.

        Raises:
            ScenarioError: a command failed (everything created so far is removed).
        """
        cleanup_stale()
        _OPEN.add(self)
        try:
            for ns in (self.client_ns, self.server_ns):
                _run("ip", "netns", "add", ns)
                self._created.append(ns)
            (cns, cdev), (sns, sdev) = self._dev["uplink"], self._dev["downlink"]
            _run("ip", "-n", cns, "link", "add", cdev, "type", "veth", "peer", "name", sdev, "netns", sns)
            for ns, dev, ip in ((cns, cdev, CLIENT_IP), (sns, sdev, SERVER_IP)):
                _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "mtu", "1500", "up")
                _run("ip", "-n", ns, "link", "set", "lo", "mtu", "1500", "up")
            for direction, trace in self._traces.items():
                if trace is None:
                    continue
                ns, dev = self._dev[direction]
                rate = self._rate_for(direction, 0.0)
                _run("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", *self._tbf_args(trace, rate))
                self._applied[direction] = rate
                self._batch[direction] = subprocess.Popen(
                    ["tc", "-n", ns, "-force", "-batch", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True, bufsize=1)
                threading.Thread(target=self._drain_errors, args=(self._batch[direction],), daemon=True).start()
            if self._batch:
                self._thread = threading.Thread(target=self._follow, name="netem-tbf", daemon=True)
                self._thread.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stops following, ends the tc processes and deletes the namespaces (and so the veth). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        for p in self._batch.values():
            with contextlib.suppress(OSError):
                p.stdin.close()  # type: ignore[union-attr]
            try:
                p.wait(5.0)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5.0)
        self._batch.clear()
        while self._created:
            ns = self._created.pop()
            with contextlib.suppress(ScenarioError, subprocess.TimeoutExpired):
                _run("ip", "netns", "del", ns)
        _OPEN.discard(self)

    def __enter__(self) -> KernelLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- rates -------------------------------------------------------------------------------------------

    @staticmethod
    def _tbf_args(trace: BandwidthTrace, rate_bps: float) -> list[str]:
        # Sized once from the trace's peak so that a change only moves the rate. Every `tc qdisc change`
        # refills the bucket, so the burst is kept small: 5 ms at the peak (at least two frames); smaller
        # bursts measured 4% under the rate at 100 Mbit/s. The queue limit is 400 ms at the peak (like
        # "latency 400ms"), so TCP does not see drops.
        peak = max(float(trace.rate_bps.max()), MIN_RATE_BPS) * WIRE_OVERHEAD
        burst = max(2 * 1514, int(peak / 8 * 0.005))
        limit = max(256 * 1024, int(peak / 8 * 0.4)) + burst
        return ["tbf", "rate", f"{int(rate_bps * WIRE_OVERHEAD)}bit", "burst", str(burst), "limit", str(limit)]

    def _rate_for(self, direction: str, t_s: float) -> float:
        """The trace's mean rate over the next update interval (bytes are kept when ticks straddle a step)."""
        trace = self._traces[direction]
        assert trace is not None
        t = t_s + self._offsets[direction]
        return max(MIN_RATE_BPS, trace.bits_between(t, t + self.update_s) / self.update_s)

    def _follow(self) -> None:
        while not self._stop.wait(max(0.0, self.update_s - (time.monotonic() - self.t0) % self.update_s)):
            now = time.monotonic() - self.t0
            for direction, proc in self._batch.items():
                rate = self._rate_for(direction, now)
                applied = self._applied[direction]
                if applied is not None and abs(rate - applied) <= 0.005 * applied:
                    continue  # a change refills the bucket: skip ones that move nothing
                ns, dev = self._dev[direction]
                trace = self._traces[direction]
                assert trace is not None and proc.stdin is not None
                try:
                    command = ["qdisc", "change", "dev", dev, "root", *self._tbf_args(trace, rate)]
                    proc.stdin.write(" ".join(command) + "\n")
                    proc.stdin.flush()
                except OSError as e:
                    self.tc_errors.append(f"{ns}: {e}")
                    return
                self._applied[direction] = rate

    def _drain_errors(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if len(self.tc_errors) < 100:
                self.tc_errors.append(line.strip())

    def applied_rate_bps(self, direction: str) -> float | None:
        """The rate last given to tbf on ``"uplink"`` or ``"downlink"``; ``None`` when unshaped."""
        return self._applied[direction]

    def socket_in(self, side: str) -> socket.socket:
        """A new TCP socket inside the ``"client"`` or ``"server"`` namespace."""
        return _socket_in_netns(self.client_ns if side == "client" else self.server_ns)


@atexit.register
def _close_all() -> None:
    for link in list(_OPEN):
        link.close()


class KernelLinkEmulator:
    """:class:`~edgeflow.netem.userspace.LinkEmulator`'s surface with the rate shaped by the kernel.

    Args:
        target: where connections go, ``(host, port)`` or ``"host:port"`` in the caller's namespace.
        uplink, downlink: as for ``LinkEmulator``; ``rate`` goes to tbf, the rest stays in userspace.
        outages: as for ``LinkEmulator`` (applied in userspace).
        listen: where clients connect (the caller's namespace).
        update_s: how often tbf follows the traces.
    """

    def __init__(self, target: str | tuple[str, int], uplink: LinkSpec = LinkSpec(), downlink: LinkSpec = LinkSpec(),
                 *, outages: Sequence[Outage] = (), listen: str | tuple[str, int] = ("127.0.0.1", 0),
                 update_s: float = 0.1, queue_s: float = 0.05):
        self.target = parse_address(target)
        self.uplink, self.downlink = uplink, downlink
        self.outages = tuple(outages)
        self.schedule = Schedule(outages)
        self.listen = parse_address(listen)
        self.update_s, self.queue_s = update_s, queue_s
        self.link: KernelLink | None = None
        self._relay: LinkEmulator | None = None
        self._entry: LinkEmulator | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        if self._entry is None:
            raise RuntimeError("KernelLinkEmulator is not started")
        return self._entry.address

    def start(self) -> int:
        """Builds the kernel link and both proxies; returns the port clients connect to.

        Raises:
            ScenarioError: the namespaces or qdiscs cannot be created (nothing is left behind).
        """
        self.link = KernelLink(self.uplink.rate, self.downlink.rate, update_s=self.update_s,
                               trace_offset_s=(self.uplink.trace_offset_s, self.downlink.trace_offset_s))
        try:
            self.link.open()
            lsock = self.link.socket_in("server")
            lsock.bind((SERVER_IP, 0))
            lsock.listen(256)
            relay_port = lsock.getsockname()[1]
            self._relay = LinkEmulator(self.target, listen_socket=lsock)
            self._relay.start()
            link = self.link
            self._entry = LinkEmulator((SERVER_IP, relay_port), replace(self.uplink, rate=None),
                                       replace(self.downlink, rate=None), outages=self.outages, listen=self.listen,
                                       queue_s=self.queue_s, socket_factory=lambda: link.socket_in("client"))
            self.port = self._entry.start()
            self.link.t0 = time.monotonic() - self._entry.now()
        except BaseException:
            self.stop()
            raise
        return self.port

    def stop(self) -> None:
        """Stops both proxies and tears the link down. Idempotent."""
        for emu in (self._entry, self._relay):
            if emu is not None:
                emu.stop()
        if self.link is not None:
            self.link.close()

    def __enter__(self) -> KernelLinkEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def now(self) -> float:
        return self._entry.now() if self._entry is not None else 0.0

    def stats(self) -> LinkStats:
        return self._entry.stats() if self._entry is not None else LinkStats()

    def current_rate_bps(self, direction: str = "downlink") -> float | None:
        """The rate set now: 0 in an outage, the tbf rate, or ``None`` when unshaped."""
        if self.schedule.at(self.now()) is not None:
            return 0.0
        return None if self.link is None else self.link.applied_rate_bps(direction)
