"""Runs a link emulator as its own process (what the scenario runner starts).

    python -m edgeflow.netem --target 127.0.0.1:50051 --rate-mbit 10 --delay-ms 20
    python -m edgeflow.netem.userspace --target 127.0.0.1:50051 --trace lte.log --scale 0.5
    python -m edgeflow.netem --backend kernel --target 127.0.0.1:50051 --down-rate-mbit 20   # root only

Prints ``listening on HOST:PORT`` once ready, runs until SIGTERM/SIGINT (or ``--duration-s``), then prints
one JSON line of counters and exits 0. Rates: ``--rate-mbit`` / ``--trace`` set both directions, the
``--up-*`` / ``--down-*`` forms one. ``--outage START:DURATION[:MODE]`` (seconds; repeatable), MODE is
``refuse`` (default: new connections reset, open ones stall), ``stall`` (everything stalls) or ``reset``
(also resets open connections).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import asdict
from typing import Sequence

from edgeflow.core.traces import BandwidthTrace, TRACE_FORMATS, constant, read_trace
from edgeflow.errors import ConfigError
from edgeflow.netem.link import LinkSpec, Outage

_OUTAGE_MODES = {"refuse": (True, False), "stall": (False, False), "reset": (True, True)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgeflow.netem", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("userspace", "kernel"), default="userspace")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any free port)")
    p.add_argument("--target", required=True, help="HOST:PORT connections are forwarded to")
    for prefix, which in (("", "both directions"), ("up-", "client -> target"), ("down-", "target -> client")):
        p.add_argument(f"--{prefix}rate-mbit", type=float, help=f"constant rate, {which}")
        p.add_argument(f"--{prefix}trace", help=f"bandwidth trace file, {which}")
        p.add_argument(f"--{prefix}delay-ms", type=float, help=f"one-way delay, {which}")
    p.add_argument("--trace-format", choices=TRACE_FORMATS, default="auto")
    p.add_argument("--bin-s", type=float, default=1.0, help="bin width for mahimahi traces")
    p.add_argument("--scale", type=float, default=1.0, help="multiply trace rates by this")
    p.add_argument("--loss", type=float, default=0.0, help="per-packet loss probability (costs one RTO)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--outage", action="append", default=[], metavar="START:DURATION[:MODE]")
    p.add_argument("--duration-s", type=float, help="exit after this long (default: until SIGTERM)")
    return p


def _rate(args: argparse.Namespace, prefix: str) -> BandwidthTrace | None:
    mbit = getattr(args, f"{prefix}rate_mbit") or (args.rate_mbit if prefix else None)
    path = getattr(args, f"{prefix}trace") or (args.trace if prefix else None)
    if path is not None:
        return read_trace(path, args.trace_format, bin_s=args.bin_s).scaled(args.scale)
    return None if mbit is None else constant(mbit * 1e6)


def _spec(args: argparse.Namespace, prefix: str, seed: int) -> LinkSpec:
    delay_ms = getattr(args, f"{prefix}delay_ms")
    delay_ms = args.delay_ms if delay_ms is None else delay_ms
    return LinkSpec(rate=_rate(args, prefix), delay_s=(delay_ms or 0.0) / 1000, loss=args.loss, seed=seed)


def _outage(text: str) -> Outage:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in _OUTAGE_MODES):
        raise ConfigError(f"--outage {text!r}: expected START:DURATION[:{'|'.join(_OUTAGE_MODES)}]")
    refuse, reset = _OUTAGE_MODES[parts[2] if len(parts) == 3 else "refuse"]
    try:
        return Outage(float(parts[0]), float(parts[1]), refuse_new=refuse, reset_existing=reset)
    except ValueError:
        raise ConfigError(f"--outage {text!r}: START and DURATION must be numbers") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        up, down = _spec(args, "up_", args.seed), _spec(args, "down_", args.seed + 1)
        outages = [_outage(o) for o in args.outage]
        if args.backend == "kernel":
            from edgeflow.netem.kernel import KernelLinkEmulator, available

            ok, why = available()
            if not ok:
                raise ConfigError(f"kernel backend unavailable: {why}")
            emu = KernelLinkEmulator(args.target, up, down, outages=outages, listen=args.listen)
        else:
            from edgeflow.netem.userspace import LinkEmulator

            emu = LinkEmulator(args.target, up, down, outages=outages, listen=args.listen)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    emu.start()
    try:
        print(f"listening on {emu.address}", flush=True)
        done.wait(args.duration_s)
    finally:
        emu.stop()
    print(json.dumps(asdict(emu.stats())), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
