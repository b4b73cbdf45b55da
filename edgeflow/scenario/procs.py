"""Child processes that announce their address: edgeflow agents (and emulators, benchmark servers), stopped for
certain, and faulted on purpose.

    cloud = AgentProcess("cloud", Path("nodes/cloud.yaml"), port=0, log_path=Path("logs/cloud.log"))
    cloud.wait_ready(120)                 # reads 'edgeflow agent cloud listening on 127.0.0.1:PORT'
    cloud.kill()                          # SIGKILL, as a crash would
    cloud.restart(120)                    # the same command, on the same port
    cloud.pause(); cloud.resume()         # SIGSTOP / SIGCONT: a stalled peer
    stop_all([cloud])                     # SIGTERM, grace, SIGKILL; idempotent

Scenario runs, integration tests and benchmarks all start agents this way.

Stopping for certain: each child runs in its own session (process group), so a Ctrl-C at the terminal reaches
only the parent, which then stops the children in order: SIGTERM to the group, a grace period, SIGKILL. Should
the parent itself be killed, every child carries ``PR_SET_PDEATHSIG`` = SIGTERM (Linux): the kernel stops it
when the thread that started it dies. That thread is one long-lived launcher thread of this module (not the
caller's), so a child restarted from a short-lived thread (a fault injector) does not die with that thread.

The child's address is read from its stdout (a pump thread keeps reading, so a chatty child never blocks on a
full pipe); its stderr goes to a log file.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from edgeflow.errors import ScenarioError

__all__ = ["ChildProcess", "AgentProcess", "child_env", "wait_all", "stop_all", "rss_bytes", "LISTENING"]

LISTENING = r"listening on (\S+)"  # group 1: the address
_AGENT_LISTENING = r"edgeflow agent \w+ listening on (\S+)"

# Runs before exec: ask the kernel to SIGTERM this process when its parent thread dies, then become the child.
# If the parent is already gone (it died between fork and prctl), exit instead of running orphaned.
_LAUNCH = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(3)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def child_env(**extra: str) -> dict[str, str]:
    """A child's environment: this edgeflow first on the path, one OpenMP thread (2-core machines), unbuffered."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------- launcher thread
class _Launcher:
    """One daemon thread that forks every child (see the module doc: PR_SET_PDEATHSIG follows the forking thread)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="edgeflow-launcher", daemon=True)
                self._thread.start()
        done: Future[Any] = Future()
        self._jobs.put((fn, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                done.set_exception(e)


_LAUNCHER = _Launcher()


# ------------------------------------------------------------------------------------------- one child
class ChildProcess:
    """A Python child (``python ARGS...``) that prints its address on stdout.

    Args:
        name: label for messages, e.g. ``edge`` or ``neurosurgeon/cloud``.
        args: the arguments after ``python``, e.g. ``["-m", "edgeflow.netem", "--target", ...]``.
        pattern: a regex whose group 1 is the address, searched in each stdout line.
        log_path: where stderr goes (default: kept in memory, see :attr:`log`).
        env: the environment (default :func:`child_env`).
        cwd: working directory.

    Raises:
        ScenarioError: the process cannot be started.
    """

    def __init__(self, name: str, args: Sequence[str], *, pattern: str = LISTENING, log_path: Path | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None):
        self.name = name
        self.args = list(args)
        self.pattern = re.compile(pattern)
        self.env = env if env is not None else child_env()
        self.cwd = cwd
        self.log_path = log_path
        self._stderr: list[str] = []  # stderr lines when there is no log file
        self.address: str | None = None
        self.stdout_tail: collections.deque[str] = collections.deque(maxlen=50)
        self.restarts = 0
        self._lock = threading.Lock()  # guards proc replacement against stop()
        self._stopped = False
        self._paused = False
        self._ready = threading.Event()
        self._log: IO[bytes] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes]
        self._spawn(self.args, append=False)

    # ------------------------------------------------------------------------------- start and read
    def _spawn(self, args: list[str], *, append: bool) -> None:
        """Start ``python args`` (from the launcher thread) as :attr:`proc`, with pumps for its output."""
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.log_path is not None:
            self._log = open(self.log_path, "ab" if append else "wb")
        argv = [sys.executable, "-c", _LAUNCH, str(os.getpid()), *args]
        self._ready.clear()
        stderr: Any = self._log if self._log is not None else subprocess.PIPE

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                    env=self.env, cwd=self.cwd, start_new_session=True)  # fmt: skip

        try:
            proc: subprocess.Popen[bytes] = _LAUNCHER.call(popen)
        except OSError as e:
            if self._log is not None:
                self._log.close()
            raise ScenarioError(f"{self.name}: cannot start {' '.join(args[:3])}: {e}") from None
        self.proc = proc  # before the pumps: they only trust lines of the current process
        threading.Thread(target=self._pump, args=(proc,), name=f"edgeflow-pump-{self.name}", daemon=True).start()
        if proc.stderr is not None:
            threading.Thread(target=self._pump_stderr, args=(proc,), name=f"edgeflow-err-{self.name}", daemon=True).start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:  # ends at EOF: the child exited (or closed stdout)
                line = raw.decode(errors="replace").rstrip("\n")
                self.stdout_tail.append(line)
                if proc is self.proc and not self._ready.is_set():
                    m = self.pattern.search(line)
                    if m:
                        self.address = m.group(1)
                        self._ready.set()
        except (OSError, ValueError):
            pass
        finally:
            proc.stdout.close()  # the pumps own the pipes: closing them under a blocked read would wait for it

    def _pump_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        try:
            for raw in proc.stderr:
                self._stderr.append(raw.decode(errors="replace"))
        except (OSError, ValueError):
            pass
        finally:
            proc.stderr.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def log(self) -> str:
        """The child's stderr so far (all of it; restarts append)."""
        if self.log_path is None:
            return "".join(self._stderr)
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 6) -> str:
        text = self.log.strip().splitlines()
        where = f"log {self.log_path}" if self.log_path is not None else "stderr"
        return f"{where}: " + (" | ".join(text[-lines:]) if text else "empty")

    def wait_ready(self, timeout_s: float) -> str:
        """Wait for the address line; returns the address.

        Raises:
            ScenarioError: the child exited first, or ``timeout_s`` passed (quoting the end of its log).
        """
        end = time.monotonic() + timeout_s
        while not self._ready.is_set():
            left = end - time.monotonic()
            if left <= 0:
                raise ScenarioError(f"{self.name}: not listening after {timeout_s:g} s; {self.log_tail()}")
            if self.proc.poll() is not None:
                if self._ready.wait(0.2):  # the line and EOF may race
                    break
                code = self.proc.wait(5)
                raise ScenarioError(f"{self.name}: exited before listening (code {code}); {self.log_tail()}")
            self._ready.wait(min(left, 0.2))
        assert self.address is not None
        return self.address

    # ------------------------------------------------------------------------------- faults
    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL: a crash) to the child's process group and reap it if it exits.

        A SIGKILL is waited for (bounded); other signals return at once (SIGTERM drains for its grace period).
        """
        self._signal(sig)
        if self._paused and sig not in (signal.SIGKILL, signal.SIGSTOP):
            self.resume()  # a stopped process would not act on the signal
        if sig == signal.SIGKILL:
            try:
                self.proc.wait(10.0)
            except subprocess.TimeoutExpired:
                pass

    def pause(self) -> None:
        """SIGSTOP the process group: the child holds its sockets but answers nothing (a stalled peer)."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT the process group."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self, timeout_s: float, *, args: Sequence[str] | None = None) -> str:
        """Stop the child if it still runs (SIGKILL), start the same command again, wait until it listens.

        Args:
            timeout_s: how long to wait for the address line.
            args: a different command (e.g. one pinning the port the first run bound); default the same.

        Returns:
            The new address.

        Raises:
            ScenarioError: the child was stopped for good (:meth:`stop`), or it did not start.
        """
        with self._lock:
            if self._stopped:
                raise ScenarioError(f"{self.name}: stopped; not restarting")
            if self.proc.poll() is None:
                self._signal(signal.SIGKILL)
                self.proc.wait(10.0)
            self._paused = False
            self.address = None
            self.restarts += 1
            self._spawn(list(args) if args is not None else self.args, append=True)
        return self.wait_ready(timeout_s)

    def _signal(self, sig: int) -> None:
        _signal_group(self.proc.pid, sig)

    # ------------------------------------------------------------------------------- stop
    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM the process group, wait ``grace_s``, then SIGKILL it. Returns the exit code. Idempotent; no
        :meth:`restart` after it."""
        with self._lock:
            self._stopped = True
            proc = self.proc
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                if self._paused:
                    _signal_group(proc.pid, signal.SIGCONT)
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(5.0)
            return proc.returncode
        finally:
            _signal_group(proc.pid, signal.SIGKILL)  # anything the child itself started
            if self._log is not None:
                self._log.close()


class AgentProcess(ChildProcess):
    """``python -m edgeflow agent --node FILE ...``; :meth:`restart` brings it back on the port it bound.

    Args:
        name: label for messages.
        node_file: the node file it serves.
        extra_args: more ``edgeflow agent`` options.
        port, upstream, plan, artifact, profile_repeats, log_level: the ``edgeflow agent`` options of those names
            (None: the node file's value / the CLI default).
        log_path, env, cwd: as :class:`ChildProcess`.
    """

    def __init__(self, name: str, node_file: Path, *extra_args: str, port: int | None = None,
                 upstream: str | None = None, plan: str | None = None, artifact: str | None = None,
                 profile_repeats: int | None = None, log_level: str | None = None, log_path: Path | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None):
        self.node_file = node_file
        self._options: list[str] = []
        for flag, value in (("--upstream", upstream), ("--plan", plan), ("--artifact", artifact),
                            ("--profile-repeats", profile_repeats), ("--log-level", log_level)):
            if value is not None:
                self._options += [flag, str(value)]
        self._options += list(extra_args)
        super().__init__(name, self._argv(port), pattern=_AGENT_LISTENING, log_path=log_path, env=env, cwd=cwd)

    def _argv(self, port: int | None) -> list[str]:
        pinned = [] if port is None else ["--port", str(port)]
        return ["-m", "edgeflow", "agent", "--node", str(self.node_file), *pinned, *self._options]

    @property
    def port(self) -> int | None:
        return None if self.address is None else int(self.address.rsplit(":", 1)[1])

    def restart(self, timeout_s: float, *, args: Sequence[str] | None = None) -> str:
        """As :meth:`ChildProcess.restart`, on the port the agent listened on (its peers keep a valid address).

        Raises:
            ScenarioError: it did not start, or came back on another address.
        """
        old = self.address
        if args is None and self.port is not None:
            args = self._argv(self.port)
        new = super().restart(timeout_s, args=args)
        if old is not None and new != old:
            raise ScenarioError(f"{self.name}: restarted on {new}, not on {old}")
        return new


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_all(procs: Sequence[ChildProcess], timeout_s: float) -> None:
    """Wait until every process printed its address (they start in parallel).

    Raises:
        ScenarioError: one exited, or ``timeout_s`` passed (naming which and the end of its log).
    """
    end = time.monotonic() + timeout_s
    for p in procs:
        p.wait_ready(max(0.0, end - time.monotonic()))


def stop_all(procs: Sequence[ChildProcess], grace_s: float = 5.0) -> None:
    """SIGTERM every process first (they drain in parallel), then wait for / kill each."""
    for p in procs:
        if p.running():
            _signal_group(p.pid, signal.SIGTERM)
            _signal_group(p.pid, signal.SIGCONT)  # a paused one must run to act on it
    for p in procs:
        p.stop(grace_s)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a live process (Linux ``/proc``), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
