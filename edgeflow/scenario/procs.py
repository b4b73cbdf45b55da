"""Agent processes for a scenario: started through the CLI, stopped for certain.

Each agent is ``python -m edgeflow agent --node FILE`` in its own session (process group), so a Ctrl-C at the
terminal reaches only the runner, which then stops the agents in order: SIGTERM to the group, a grace
period, SIGKILL. As a last resort, should the runner itself be killed, every agent is started with
``PR_SET_PDEATHSIG`` = SIGTERM (Linux): the kernel stops it when the thread that started it dies. Agents must
therefore be started from a thread that outlives them (the runner starts them from its calling thread).

The bound address is read from the agent's ``edgeflow agent <role> listening on <host:port>`` line; its log
(stderr) goes to a file in the report folder.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Sequence

from edgeflow.errors import ScenarioError

__all__ = ["AgentProcess", "wait_all", "stop_all", "agent_env"]

_LISTENING = re.compile(r"edgeflow agent (\w+) listening on (\S+)")

# Runs before exec: ask the kernel to SIGTERM this process when its parent thread dies, then become the agent.
# If the parent is already gone (it died between fork and prctl), exit instead of running orphaned.
_LAUNCH = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(3)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'edgeflow', *sys.argv[2:]])\n"
)


def agent_env() -> dict[str, str]:
    """The agents' environment: this edgeflow first on the path, one OpenMP thread (2-core machines)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class AgentProcess:
    """One ``edgeflow agent`` process.

    Args:
        name: label for messages, e.g. ``neurosurgeon/cloud``.
        node_file: the node file it serves.
        log_path: where its stderr goes.
        extra_args: more ``edgeflow agent`` options.

    Raises:
        ScenarioError: the process cannot be started.
    """

    def __init__(self, name: str, node_file: Path, log_path: Path, extra_args: Sequence[str] = ()):
        self.name = name
        self.log_path = log_path
        self.address: str | None = None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "wb")
        argv = [sys.executable, "-c", _LAUNCH, str(os.getpid()), "agent", "--node", str(node_file), *extra_args]
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                env=agent_env(), start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            self._log.close()
            raise ScenarioError(f"{name}: cannot start the agent: {e}") from None
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def _read_available(self) -> None:
        assert self.proc.stdout is not None
        chunk = os.read(self.proc.stdout.fileno(), 4096)
        if not chunk:
            raise ScenarioError(f"{self.name}: agent exited before listening (code {self.proc.wait(5)}); {self.log_tail()}")
        self._buf += chunk
        m = _LISTENING.search(self._buf.decode(errors="replace"))
        if m:
            self.address = m.group(2)

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return f"log {self.log_path}: " + " | ".join(text[-lines:])

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM the process group, wait ``grace_s``, then SIGKILL it. Returns the exit code. Idempotent."""
        try:
            if self.proc.poll() is None:
                _signal_group(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    _signal_group(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5.0)
            return self.proc.returncode
        finally:
            _signal_group(self.proc.pid, signal.SIGKILL)  # anything the agent itself started
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._log.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_all(procs: Sequence[AgentProcess], timeout_s: float) -> None:
    """Wait until every process printed its address.

    Raises:
        ScenarioError: one exited, or ``timeout_s`` passed (naming which and the end of its log).
    """
    end = time.monotonic() + timeout_s
    pending = [p for p in procs if p.address is None]
    with selectors.DefaultSelector() as sel:
        for p in pending:
            assert p.proc.stdout is not None
            sel.register(p.proc.stdout, selectors.EVENT_READ, p)
        while pending:
            left = end - time.monotonic()
            if left <= 0:
                names = ", ".join(p.name for p in pending)
                raise ScenarioError(f"agents not listening after {timeout_s:g} s: {names}; {pending[0].log_tail()}")
            for key, _ in sel.select(timeout=min(left, 0.5)):
                p = key.data
                p._read_available()
                if p.address is not None:
                    sel.unregister(key.fileobj)
                    pending.remove(p)


def stop_all(procs: Sequence[AgentProcess], grace_s: float = 5.0) -> None:
    """SIGTERM every process first (they drain in parallel), then wait for / kill each."""
    for p in procs:
        if p.running():
            _signal_group(p.pid, signal.SIGTERM)
    for p in procs:
        p.stop(grace_s)
