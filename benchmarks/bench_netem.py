"""Link-emulator benchmark: set vs measured throughput for both backends, and the unshaped proxy's ceiling.

    python benchmarks/bench_netem.py            # writes benchmarks/results/netem.json
    python benchmarks/bench_netem.py --quick    # fewer rates, shorter transfers

1. sweep: for each set rate in 0.1-1000 Mbit/s, one bulk TCP transfer of ``--seconds`` worth of bytes through
   the emulator started as its own process (``python -m edgeflow.netem --backend B --rate-mbit R``, as the
   scenario runner starts it). ``measured`` is the receiver's steady-state rate (bytes after the first 20 %
   over the time they took); ``overall`` counts every byte from the first send to the last receive (it
   includes TCP slow start and the first bucket of credit). The kernel backend is skipped, with its reason,
   where it is unavailable (not root).
2. unshaped: the same transfer (``--unshaped-mib``) straight over loopback and through each backend with no
   rate; ``ratio`` = through / direct, measured in the same run.

Sender and receiver are threads of this process; every wait is bounded and every child is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeflow.netem.kernel import available  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "netem.json"
RATES_MBIT = [0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000]
QUICK_RATES_MBIT = [0.1, 1, 10, 100, 1000]
TIMEOUT_S = 60.0


class Emulator:
    """``python -m edgeflow.netem`` in a child process; :attr:`port` from its 'listening on' line."""

    def __init__(self, backend: str, target_port: int, rate_mbit: float | None):
        args = [sys.executable, "-m", "edgeflow.netem", "--backend", backend, "--target", f"127.0.0.1:{target_port}"]
        if rate_mbit is not None:
            args += ["--rate-mbit", str(rate_mbit)]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        m = re.search(r"listening on \S+:(\d+)", line)
        if not m:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=20)
            raise RuntimeError(f"emulator did not start: {line!r} {err}")
        self.port = int(m.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=5)


def transfer(connect_port: int, sink: socket.socket, nbytes: int) -> dict[str, float]:
    """Sends ``nbytes`` to ``connect_port`` while ``sink`` (whose port that leads to) receives them."""
    marks: list[tuple[float, int]] = []

    def receive() -> None:
        sink.settimeout(TIMEOUT_S)
        conn, _ = sink.accept()
        with conn:
            conn.settimeout(TIMEOUT_S)
            total = 0
            while data := conn.recv(1 << 20):
                total += len(data)
                marks.append((time.monotonic(), total))

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    block = b"\0" * (1 << 20)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", connect_port), timeout=TIMEOUT_S) as s:
        left = nbytes
        while left > 0:
            n = min(left, len(block))
            s.sendall(block[:n])
            left -= n
    rx.join(TIMEOUT_S)
    if rx.is_alive() or not marks or marks[-1][1] != nbytes:
        raise RuntimeError(f"transfer incomplete: {marks[-1][1] if marks else 0} of {nbytes} bytes")
    total = marks[-1][1]
    ta, ba = next(m for m in marks if m[1] >= 0.2 * total)
    steady = (total - ba) * 8 / max(marks[-1][0] - ta, 1e-9)
    return {"measured_mbit": steady / 1e6, "overall_mbit": total * 8 / (marks[-1][0] - t0) / 1e6,
            "seconds": marks[-1][0] - t0, "nbytes": nbytes}


def through(backend: str | None, rate_mbit: float | None, nbytes: int) -> dict[str, float]:
    with socket.create_server(("127.0.0.1", 0)) as sink:
        if backend is None:
            return transfer(sink.getsockname()[1], sink, nbytes)
        emu = Emulator(backend, sink.getsockname()[1], rate_mbit)
        try:
            return transfer(emu.port, sink, nbytes)
        finally:
            emu.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=None, help="transfer length at the set rate")
    ap.add_argument("--unshaped-mib", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    seconds = args.seconds or (1.5 if args.quick else 2.5)
    unshaped_mib = args.unshaped_mib or (256 if args.quick else 1024)
    rates = QUICK_RATES_MBIT if args.quick else RATES_MBIT
    kernel_ok, kernel_why = available()
    backends = ["userspace"] + (["kernel"] if kernel_ok else [])

    sweep: list[dict[str, Any]] = []
    for backend in backends:
        for rate in rates:
            nbytes = max(64 * 1024, int(rate * 1e6 / 8 * seconds))
            r = through(backend, rate, nbytes)
            r |= {"backend": backend, "set_mbit": rate, "ratio": r["measured_mbit"] / rate}
            sweep.append(r)
            print(f"{backend:9s} set {rate:7.1f}  measured {r['measured_mbit']:8.3f}  ratio {r['ratio']:.4f}  "
                  f"overall {r['overall_mbit']:8.3f} Mbit/s", flush=True)

    nbytes = unshaped_mib << 20
    direct = through(None, None, nbytes)["overall_mbit"]
    unshaped: dict[str, Any] = {"nbytes": nbytes, "direct_mbit": direct}
    for backend in backends:
        mbit = through(backend, None, nbytes)["overall_mbit"]
        unshaped[backend] = {"mbit": mbit, "ratio_vs_direct": mbit / direct}
        print(f"unshaped {backend}: {mbit:.0f} Mbit/s = {mbit / direct:.3f} x direct loopback ({direct:.0f})",
              flush=True)

    in_range = [s for s in sweep if 0.5 <= s["set_mbit"] <= 100]
    result = {
        "benchmark": "netem",
        "command": "python benchmarks/bench_netem.py" + (" --quick" if args.quick else ""),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "kernel_backend": {"available": kernel_ok, "reason": kernel_why},
        "method": "bulk TCP transfer through `python -m edgeflow.netem` as a child process; measured = "
                  "steady-state receive rate after the first 20 % of bytes",
        "sweep": sweep,
        "max_abs_error_0.5_to_100_mbit": {b: max((abs(s["ratio"] - 1) for s in in_range if s["backend"] == b),
                                                  default=None) for b in backends},
        "max_abs_error_all": {b: max(abs(s["ratio"] - 1) for s in sweep if s["backend"] == b) for b in backends},
        "unshaped": unshaped,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
