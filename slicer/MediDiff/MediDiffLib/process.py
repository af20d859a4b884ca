"""Run ``medidiff restore`` as a background process that a Qt timer polls, and cancel its whole process tree.

Slicer must not freeze while a restoration runs, so the process is started and then polled: :meth:`poll` never
blocks. Two reader threads move the process's output lines into a queue (threads, not ``select``, because
``select`` does not work on pipes on Windows); ``poll`` drains the queue, turns progress lines into
:class:`ProgressEvent` and keeps the other lines for the log and for error messages.

The process runs in its own session (POSIX) or process group (Windows) so that cancel can stop it together
with everything it started (data-loader workers, a ``torchrun`` launcher): killing only the direct child
would leave grandchildren computing. ``psutil`` is used when available to also reach descendants that left
the group.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import IO, Any

from MediDiffLib.errors import ProcessError, message, process_failure

# A copy of medidiff.progress.PROGRESS_PREFIX: this module must work before medidiff is installed (it runs in
# Slicer's Python, which may not have medidiff yet). tests/slicer checks that the two agree.
PROGRESS_PREFIX = "medidiff-progress"
_PROGRESS_LINE = re.compile(r"^" + re.escape(PROGRESS_PREFIX) + r"\s+(\S+)\s+(\d+)\s*/\s*(\d+)\s*$")

# Output lines kept per stream: the tail is what errors need, and a chatty process must not grow memory.
LOG_LINES_KEPT = 2000
# How long after the process has exited poll() keeps waiting (over several calls, never blocking) for the last
# output lines. A grandchild that inherited the pipes can keep them open after the main process ended.
_READER_GRACE_S = 2.0
# Default seconds between the polite termination request of a cancel and the kill.
CANCEL_GRACE_S = 2.0


@dataclass(frozen=True)
class ProgressEvent:
    """One ``medidiff-progress <stage> <done>/<total>`` line."""

    stage: str
    done: int
    total: int

    @property
    def fraction(self) -> float:
        """Progress of the stage in [0, 1]."""
        if self.total <= 0:
            return 0.0
        return min(max(self.done / self.total, 0.0), 1.0)

    def describe(self) -> str:
        """Return ``"denoise 12/50"`` (underscores in the stage name shown as spaces)."""
        return f"{self.stage.replace('_', ' ')} {self.done}/{self.total}"


def parse_progress_line(line: str) -> ProgressEvent | None:
    """Parse a progress line; return ``None`` for any other line (log output, errors, malformed lines)."""
    match = _PROGRESS_LINE.match(line.strip())
    if match is None:
        return None
    stage, done, total = match.group(1), int(match.group(2)), int(match.group(3))
    return ProgressEvent(stage=stage, done=done, total=total)


class ProcessState(Enum):
    """Life cycle of a :class:`BackgroundProcess`."""

    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (ProcessState.SUCCEEDED, ProcessState.FAILED, ProcessState.CANCELLED)


@dataclass(frozen=True)
class ProcessStatus:
    """What one :meth:`BackgroundProcess.poll` found.

    Attributes:
        state: where the process is in its life cycle.
        progress: the latest progress line seen so far, if any.
        returncode: the exit status once finished (negative: killed by that signal, POSIX).
        elapsed_s: seconds since start (frozen at the end).
        new_lines: output lines (stdout and stderr, progress lines excluded) since the previous poll.
    """

    state: ProcessState
    progress: ProgressEvent | None
    returncode: int | None
    elapsed_s: float
    new_lines: tuple[str, ...] = ()


def _pump(stream: IO[str], name: str, sink: queue.Queue[tuple[str, str | None]]) -> None:
    """Copy lines from ``stream`` into ``sink`` until EOF, then put ``(name, None)``."""
    try:
        for line in iter(stream.readline, ""):
            sink.put((name, line.rstrip("\r\n")))
    except (OSError, ValueError):  # the pipe was closed under us while shutting down
        pass
    finally:
        sink.put((name, None))


class BackgroundProcess:
    """A command run in the background, polled without blocking, cancellable with all its descendants.

    Example::

        proc = BackgroundProcess([python, "-m", "medidiff", "restore", ...])
        proc.start()
        # on a QTimer:
        status = proc.poll()
        progress_bar.value = 100 * status.progress.fraction
        if status.state.finished: ...
    """

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> None:
        """Prepare (not start) the process.

        Args:
            argv: the command line; ``argv[0]`` is the program.
            env: the whole environment of the process (default: this process's environment).
            cwd: working directory (default: the current one).
        """
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv = [str(arg) for arg in argv]
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._popen: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._stdout: deque[str] = deque(maxlen=LOG_LINES_KEPT)
        self._stderr: deque[str] = deque(maxlen=LOG_LINES_KEPT)
        self._progress: ProgressEvent | None = None
        self._state = ProcessState.NOT_STARTED
        self._returncode: int | None = None
        self._cancel_requested = False
        self._kill_at: float | None = None  # when a requested cancel escalates to a kill
        self._killed = False
        self._descendants: list[Any] = []  # psutil processes found when the cancel was requested
        self._exited_at: float | None = None  # when the process was seen to exit (readers may still drain)
        self._streams_closed = 0
        self._start_time = 0.0
        self._end_time: float | None = None

    # -- life cycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process in its own session/process group; returns immediately.

        Raises:
            ProcessError: the program cannot be started (not found, not executable).
            RuntimeError: already started.
        """
        if self._popen is not None:
            raise RuntimeError("the process was already started")
        env = dict(os.environ) if self._env is None else dict(self._env)
        # Progress lines must arrive as they are printed, and decode the same on every platform.
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["PYTHONIOENCODING"] = "utf-8"
        options: dict[str, Any] = {}
        if os.name == "posix":
            options["start_new_session"] = True  # own session and process group: pgid == pid
        else:
            # Own process group for the tree kill; no console window flashing up on Windows.
            options["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(
                subprocess, "CREATE_NO_WINDOW", 0
            )
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=self._cwd,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                **options,
            )
        except OSError as exc:
            raise ProcessError(
                message("process_start", command=self.argv[0], reason=exc.strerror or str(exc))
            ) from exc
        self._start_time = time.monotonic()
        self._state = ProcessState.RUNNING
        for name, stream in (("stdout", self._popen.stdout), ("stderr", self._popen.stderr)):
            assert stream is not None  # both are PIPE
            reader = threading.Thread(
                target=_pump, args=(stream, name, self._queue), name=f"medidiff-{name}", daemon=True
            )
            reader.start()
            self._readers.append(reader)

    def poll(self) -> ProcessStatus:
        """Collect new output, escalate a requested cancel, check whether the process ended; never blocks.

        Returns:
            The current status; ``new_lines`` holds the output lines that arrived since the previous call.
        """
        if self._popen is None:
            return ProcessStatus(ProcessState.NOT_STARTED, None, None, 0.0)
        new_lines = self._drain()
        if self._state is ProcessState.RUNNING:
            now = time.monotonic()
            returncode = self._popen.poll()
            if returncode is None and self._kill_at is not None and now >= self._kill_at and not self._killed:
                self._kill_now()
                returncode = self._popen.poll()
            if returncode is not None:
                if self._exited_at is None:
                    self._exited_at = now
                    if self._cancel_requested and not self._killed:
                        self._kill_now()  # helpers that survived the polite request
                readers_done = self._streams_closed >= len(self._readers)
                if readers_done or now - self._exited_at >= _READER_GRACE_S:
                    new_lines += self._drain()
                    self._finish(returncode)
        return ProcessStatus(self._state, self._progress, self._returncode, self.elapsed_s, tuple(new_lines))

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.05) -> ProcessStatus:
        """Poll until the process finishes (for scripts and tests; the GUI polls from a timer instead).

        Raises:
            TimeoutError: still running after ``timeout_s`` seconds (the process is left running).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        lines: list[str] = []
        while True:
            status = self.poll()
            lines.extend(status.new_lines)
            if status.state is not ProcessState.RUNNING:
                return replace(status, new_lines=tuple(lines))
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.argv[0]} still running after {timeout_s} s")
            time.sleep(interval_s)

    def request_cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Ask the process tree to stop and return at once; :meth:`poll` kills what is left after ``grace_s``.

        This is what the Slicer GUI calls: it never waits, so Cancel never freezes Slicer. The state becomes
        ``CANCELLED`` on the first :meth:`poll` after the process has exited.
        """
        if self._popen is None or self._state is not ProcessState.RUNNING or self._cancel_requested:
            return
        self._cancel_requested = True
        self._kill_at = time.monotonic() + max(grace_s, 0.0)
        self._descendants = terminate_process_tree(self._popen)

    def cancel(self, grace_s: float = CANCEL_GRACE_S, timeout_s: float = 30.0) -> None:
        """Stop the process and all its descendants and wait until it has exited (scripts, tests, shutdown).

        Args:
            grace_s: seconds the processes get to exit after the polite request before being killed.
            timeout_s: give up waiting after this long (the kill has been sent by then).
        """
        if self._popen is None or self._state is not ProcessState.RUNNING:
            return
        self.request_cancel(grace_s)
        deadline = time.monotonic() + timeout_s
        while self.poll().state is ProcessState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.02)

    def __enter__(self) -> BackgroundProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    # -- results ---------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def state(self) -> ProcessState:
        return self._state

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def progress(self) -> ProgressEvent | None:
        return self._progress

    @property
    def elapsed_s(self) -> float:
        if self._popen is None:
            return 0.0
        end = self._end_time if self._end_time is not None else time.monotonic()
        return end - self._start_time

    @property
    def stdout_lines(self) -> list[str]:
        """The last :data:`LOG_LINES_KEPT` stdout lines."""
        return list(self._stdout)

    @property
    def stderr_lines(self) -> list[str]:
        """The last :data:`LOG_LINES_KEPT` stderr lines, progress lines excluded."""
        return list(self._stderr)

    def error(self) -> ProcessError | None:
        """The error to show when the process failed (``None`` otherwise, including after a cancel)."""
        if self._state is not ProcessState.FAILED or self._returncode is None:
            return None
        return process_failure(self._returncode, self.stderr_lines)

    # -- internals -------------------------------------------------------------------------------------------

    def _drain(self) -> list[str]:
        lines: list[str] = []
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                return lines
            if line is None:
                self._streams_closed += 1
                continue
            event = parse_progress_line(line)
            if event is not None:
                self._progress = event
                continue
            (self._stderr if name == "stderr" else self._stdout).append(line)
            lines.append(line)

    def _kill_now(self) -> None:
        """Kill what is left of a cancelled tree: its process group and the descendants seen before."""
        self._killed = True
        assert self._popen is not None
        kill_remaining(self._popen, self._descendants)

    def _finish(self, returncode: int) -> None:
        self._returncode = returncode
        self._end_time = time.monotonic()
        if self._cancel_requested:
            self._state = ProcessState.CANCELLED
        elif returncode == 0:
            self._state = ProcessState.SUCCEEDED
        else:
            self._state = ProcessState.FAILED


# -- process-tree termination ------------------------------------------------------------------------------


def _import_psutil() -> Any:
    """Return the psutil module, or ``None``: it is optional (Slicer may not ship it)."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already empty
        os.killpg(pgid, sig)  # POSIX only: the caller checks os.name


def _alive(proc: Any, psutil: Any) -> bool:
    """Whether a psutil process still runs; a zombie (exited, waiting to be reaped by its parent) does not."""
    try:
        return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: Sequence[Any], psutil: Any, timeout_s: float) -> list[Any]:
    """Wait until the processes are gone; return those still alive after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _alive(p, psutil)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _alive(p, psutil)]
    return alive


def terminate_process_tree(process: subprocess.Popen[str]) -> list[Any]:
    """Ask a process started by :class:`BackgroundProcess` and all its descendants to stop; never waits.

    POSIX: SIGTERM to the process group and to every descendant that left it (found with psutil).
    Windows has no polite request for console-less processes: the tree is killed at once (psutil, or
    ``taskkill /T /F`` when psutil is missing).

    Returns:
        The descendants found (psutil processes; empty without psutil), for :func:`kill_remaining`.
    """
    psutil = _import_psutil()
    # Collected first: once the parent dies its children are re-parented and the relation is lost.
    descendants: list[Any] = []
    if psutil is not None:
        try:
            descendants = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
    if os.name == "posix":
        _signal_group(process.pid, signal.SIGTERM)
        for proc in descendants:  # psutil checks the creation time, so a reused pid is never signalled
            with contextlib.suppress(psutil.Error):
                proc.terminate()
    else:
        kill_remaining(process, descendants)
    return descendants


def kill_remaining(process: subprocess.Popen[str], descendants: Sequence[Any]) -> None:
    """Kill whatever is left of a tree after :func:`terminate_process_tree`; never waits."""
    psutil = _import_psutil()
    if os.name == "posix":
        _signal_group(process.pid, signal.SIGKILL)
    elif psutil is None and process.poll() is None:
        subprocess.run(
            ["taskkill", "/PID", str(process.pid), "/T", "/F"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.kill()
    if psutil is not None:
        for proc in descendants:
            if _alive(proc, psutil):
                with contextlib.suppress(psutil.Error):
                    proc.kill()


def kill_process_tree(process: subprocess.Popen[str], grace_s: float = CANCEL_GRACE_S) -> None:
    """Terminate a process and all its descendants, wait ``grace_s`` for them, kill the rest; blocks.

    For scripts; the module uses :meth:`BackgroundProcess.request_cancel`, which does the same over polls.
    Returns once the process is reaped.
    """
    descendants = terminate_process_tree(process)
    psutil = _import_psutil()
    start = time.monotonic()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=max(grace_s, 0.0))
    if psutil is not None:
        _wait_gone(descendants, psutil, grace_s - (time.monotonic() - start))
    kill_remaining(process, descendants)
    process.wait()
    if psutil is not None:
        _wait_gone(descendants, psutil, grace_s)
