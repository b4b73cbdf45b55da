"""Faults during a run: agents killed and restarted on the same port, or stalled, at scheduled times.

    injector = FaultInjector(scenario.faults, {"edge": edge_proc, "cloud": cloud_proc}, start=t0)
    injector.start()
    ...                                    # the run
    events = injector.finish()             # restarts / resumes whatever is still down, then the log

Each tier's faults run on a thread of their own (a restart that waits for the agent to listen does not delay
another tier's fault). A killed agent comes back on the port it listened on, so the emulated link in front of it
(and so every peer's upstream address) stays valid. Agents are started by :mod:`edgeflow.scenario.procs`'s
launcher thread, so they do not die with these threads.

The log is one record per fault, times in seconds after the run's start (see :func:`link_outage_records` for
the links' scheduled outages in the same form)::

    {"fault": "kill edge (SIGKILL) at 4 s, restart after 3 s", "kind": "kill", "target": "edge",
     "down_s": 4.001, "restart_s": 7.002, "up_s": 9.87, "startup_s": 2.87, "error": null}
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Mapping, Sequence

from edgeflow.errors import EdgeflowError, ScenarioError
from edgeflow.scenario.schema import FaultSpec
from edgeflow.scenario.procs import ChildProcess

__all__ = ["FaultInjector", "link_outage_records"]

_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}


class FaultInjector:
    """Runs a scenario's faults against its agent processes, relative to a run's start.

    Args:
        faults: the scenario's faults.
        procs: the agent process of each tier a fault may name.
        start: ``time.monotonic()`` of the run's start.
        restart_timeout_s: how long a restarted agent may take to listen.
    """

    def __init__(self, faults: Sequence[FaultSpec], procs: Mapping[str, ChildProcess], *, start: float,
                 restart_timeout_s: float = 120.0):
        self.faults = sorted(faults, key=lambda f: f.at_s)
        self.procs = dict(procs)
        self.t0 = start
        self.restart_timeout_s = restart_timeout_s
        self.records: list[dict[str, Any]] = [
            {"fault": f.describe(), "kind": "kill" if f.kill else "stall", "target": f.tier, "at_s": f.at_s,
             "down_s": None, "up_s": None, "error": None}
            for f in self.faults
        ]  # fmt: skip
        self._hurry = threading.Event()  # the run is over: skip faults not begun, bring back what is down
        self._abort = threading.Event()  # stopping everything: do nothing more
        self._threads: list[threading.Thread] = []

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        """Start one thread per tier with faults."""
        for tier in sorted({f.tier for f in self.faults}):
            mine = [i for i, f in enumerate(self.faults) if f.tier == tier]
            t = threading.Thread(target=self._serve, args=(tier, mine), name=f"edgeflow-faults-{tier}", daemon=True)
            self._threads.append(t)
            t.start()

    def _wait_until(self, t_s: float) -> bool:
        """Sleep until run time ``t_s``; False if the run ended (or was aborted) first."""
        while not (self._hurry.is_set() or self._abort.is_set()):  # bounded: each wait ends by t_s
            left = t_s - self._now()
            if left <= 0:
                return True
            self._hurry.wait(min(left, 0.5))
        return False

    def _serve(self, tier: str, indices: list[int]) -> None:
        proc = self.procs[tier]
        for i in indices:
            f, rec = self.faults[i], self.records[i]
            if not self._wait_until(f.at_s):
                rec["error"] = "not done: the run ended first"
                continue
            try:
                if f.stall is not None:
                    proc.pause()
                    rec["down_s"] = round(self._now(), 4)
                    assert f.for_s is not None
                    self._wait_until(f.at_s + f.for_s)
                    if self._abort.is_set():
                        return
                    proc.resume()
                    rec["up_s"] = round(self._now(), 4)
                else:
                    proc.kill(_SIGNALS[f.signal])
                    rec["down_s"] = round(self._now(), 4)
                    rec["signal"] = f.signal
                    if f.restart_after_s is not None:
                        self._wait_until(f.at_s + f.restart_after_s)
                    else:
                        self._hurry.wait()  # restart when the run ends
                    if self._abort.is_set():
                        return
                    if f.signal != "KILL":  # a clean shutdown drains first; wait for it (bounded by the restart)
                        _wait_exit(proc, 10.0)
                    rec["restart_s"] = round(self._now(), 4)
                    proc.restart(self.restart_timeout_s)
                    rec["up_s"] = round(self._now(), 4)
                    rec["startup_s"] = round(rec["up_s"] - rec["restart_s"], 4)
            except EdgeflowError as e:
                rec["error"] = f"{type(e).__name__}: {e}"
                return
            except OSError as e:
                rec["error"] = f"OSError: {e}"
                return

    def finish(self, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """End the run's faults: none not yet begun starts; stalled agents resume and killed ones restart (each
        waited for, bounded by ``timeout_s``, default the restart timeout plus a margin). Returns the log.

        Raises:
            ScenarioError: an agent could not be brought back (the next run would fail without it).
        """
        self._hurry.set()
        end = time.monotonic() + (timeout_s if timeout_s is not None else self.restart_timeout_s + 15.0)
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        errors = [r for r in self.records if r["error"] and r["down_s"] is not None]
        down = [tier for tier, p in self.procs.items() if not p.running()]
        if errors or down or any(t.is_alive() for t in self._threads):
            what = "; ".join(f"{r['fault']}: {r['error']}" for r in errors) or f"down: {', '.join(down) or 'restarting'}"
            raise ScenarioError(f"faults: an agent did not come back: {what}")
        return self.records

    def abort(self) -> None:
        """Stop injecting at once (the runner is stopping everything); threads end within a moment."""
        self._abort.set()
        self._hurry.set()
        for t in self._threads:
            t.join(1.0)


def _wait_exit(proc: ChildProcess, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while proc.running() and time.monotonic() < end:
        time.sleep(0.05)


def link_outage_records(links: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The links' scheduled outages as fault records (``links``: name -> :class:`~edgeflow.scenario.links.LinkPlan`)."""
    out = []
    for name, lp in links.items():
        for o in lp.outages:
            mode = "reset" if o.reset_existing else ("refuse" if o.refuse_new else "stall")
            out.append({"fault": f"link {name} down ({mode}) at {o.start_s:g} s for {o.duration_s:g} s",
                        "kind": "outage", "target": name, "at_s": o.start_s, "down_s": o.start_s, "up_s": o.end_s,
                        "error": None})  # fmt: skip
    return out
