"""The background process of the Slicer module: real subprocesses, progress, errors and tree cancel."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from MediDiffLib import process as process_module
from MediDiffLib.errors import MESSAGES, ProcessError
from MediDiffLib.process import (
    PROGRESS_PREFIX,
    BackgroundProcess,
    ProcessState,
    ProgressEvent,
    parse_progress_line,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX process groups and signals")


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def gone(pid: int) -> bool:
    """A process is gone when it no longer exists or is a zombie waiting for a reaper."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    alive = [pid for pid in pids if not gone(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if not gone(pid)]
    return alive


def read_pids(proc: BackgroundProcess, count: int, timeout_s: float = 20.0) -> list[int]:
    """Poll until the child has printed ``count`` lines ``pid N``; return the pids."""
    pids: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(pids) < count:
        assert time.monotonic() < deadline, f"child printed {proc.stdout_lines} / {proc.stderr_lines}"
        status = proc.poll()
        assert status.state is ProcessState.RUNNING, proc.stderr_lines
        pids += [int(line.split()[1]) for line in status.new_lines if line.startswith("pid ")]
        time.sleep(0.02)
    return pids


# -- progress parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("medidiff-progress denoise 12/50", ProgressEvent("denoise", 12, 50)),
        ("  medidiff-progress load_model 1/1\n", ProgressEvent("load_model", 1, 1)),
        ("medidiff-progress sample 0/0", ProgressEvent("sample", 0, 0)),
        ("medidiff-progress inpaint 3 / 8", ProgressEvent("inpaint", 3, 8)),
    ],
)
def test_parse_progress_line(line: str, expected: ProgressEvent) -> None:
    assert parse_progress_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "medidiff: error: boom",
        "medidiff-progress denoise",
        "medidiff-progress denoise 12",
        "medidiff-progress denoise a/b",
        "medidiff-progress denoise 1/2 extra",
        "medidiff-progressdenoise 1/2",
        "xmedidiff-progress denoise 1/2",
        "",
    ],
)
def test_other_lines_are_not_progress(line: str) -> None:
    assert parse_progress_line(line) is None


def test_fraction_is_clamped_and_safe() -> None:
    assert ProgressEvent("s", 5, 20).fraction == pytest.approx(0.25)
    assert ProgressEvent("s", 30, 20).fraction == 1.0
    assert ProgressEvent("s", 3, 0).fraction == 0.0
    assert ProgressEvent("load_model", 1, 2).describe() == "load model 1/2"


def test_prefix_matches_medidiff() -> None:
    from medidiff.progress import PROGRESS_PREFIX as cli_prefix

    assert cli_prefix == PROGRESS_PREFIX


def test_real_medidiff_progress_lines_reach_the_poller() -> None:
    """medidiff's own Progress class writes, the Lib reads: the two ends of the contract agree."""
    proc = BackgroundProcess(
        python(
            """
            import time
            from medidiff.progress import Progress
            print("starting")
            with Progress(5, "denoise", min_interval=0.0) as p:
                for _ in range(5):
                    time.sleep(0.01)
                    p.update()
            """
        ),
        cwd=str(REPO_ROOT),
    )
    proc.start()
    seen: list[ProgressEvent] = []
    while True:
        status = proc.poll()
        if status.progress is not None and (not seen or seen[-1] != status.progress):
            seen.append(status.progress)
        if status.state.finished:
            break
        time.sleep(0.005)
    assert status.state is ProcessState.SUCCEEDED, proc.stderr_lines
    assert status.returncode == 0
    assert seen[-1] == ProgressEvent("denoise", 5, 5)
    assert seen[-1].fraction == 1.0
    assert [event.done for event in seen] == sorted(event.done for event in seen)
    # Progress lines are consumed, not logged; ordinary output is kept.
    assert proc.stdout_lines == ["starting"]
    assert not any(line.startswith(PROGRESS_PREFIX) for line in proc.stderr_lines)


def test_poll_never_blocks_and_wait_times_out() -> None:
    with BackgroundProcess(python("import time; time.sleep(30)")) as proc:
        proc.start()
        started = time.monotonic()
        status = proc.poll()
        assert time.monotonic() - started < 0.2
        assert status.state is ProcessState.RUNNING
        assert status.returncode is None
        with pytest.raises(TimeoutError):
            proc.wait(timeout_s=0.2)
        assert proc.state is ProcessState.RUNNING
    assert proc.state is ProcessState.CANCELLED  # the context manager cancelled it


def test_not_started_and_double_start() -> None:
    proc = BackgroundProcess(python("pass"))
    assert proc.poll().state is ProcessState.NOT_STARTED
    proc.cancel()  # harmless before start
    proc.start()
    with pytest.raises(RuntimeError):
        proc.start()
    assert proc.wait(timeout_s=30).state is ProcessState.SUCCEEDED


# -- cancel ----------------------------------------------------------------------------------------------

TREE_SCRIPT = """
import subprocess, sys, time
sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
same_group = subprocess.Popen(sleeper)
escaped = subprocess.Popen(sleeper, start_new_session={escape})
print("pid", same_group.pid, flush=True)
print("pid", escaped.pid, flush=True)
time.sleep(60)
"""


def test_cancel_kills_the_whole_process_tree() -> None:
    """A child, its grandchild, and a grandchild that left the process group: all are gone after cancel."""
    proc = BackgroundProcess(python(TREE_SCRIPT.format(escape=os.name == "posix")))
    proc.start()
    grandchildren = read_pids(proc, 2)
    assert proc.pid is not None
    tree = [proc.pid, *grandchildren]
    assert not any(gone(pid) for pid in tree)
    started = time.monotonic()
    proc.cancel(grace_s=2.0)
    assert time.monotonic() - started < 6.0
    survivors = wait_until_gone(tree)
    for pid in survivors:  # never leave sleepers behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    status = proc.poll()
    assert status.state is ProcessState.CANCELLED
    assert proc.error() is None  # a cancel is not an error to report


@posix_only
def test_cancel_without_psutil_still_kills_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slicer may not ship psutil: the process-group kill alone must stop grandchildren in the group."""
    monkeypatch.setattr(process_module, "_import_psutil", lambda: None)
    proc = BackgroundProcess(python(TREE_SCRIPT.format(escape=False)))
    proc.start()
    grandchildren = read_pids(proc, 2)
    assert proc.pid is not None
    proc.cancel(grace_s=1.0)
    survivors = wait_until_gone([proc.pid, *grandchildren])
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    assert proc.state is ProcessState.CANCELLED


@posix_only
def test_request_cancel_never_blocks_and_polls_finish_the_job() -> None:
    """What the Cancel button calls: it returns at once even when SIGTERM is ignored; polls do the rest."""
    script = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("pid", 0, flush=True)
    time.sleep(60)
    """
    proc = BackgroundProcess(python(script))
    proc.start()
    read_pids(proc, 1)
    started = time.monotonic()
    proc.request_cancel(grace_s=0.3)
    assert time.monotonic() - started < 0.1
    polls = []
    while proc.state is ProcessState.RUNNING:
        begin = time.monotonic()
        proc.poll()
        polls.append(time.monotonic() - begin)
        assert time.monotonic() - started < 10
        time.sleep(0.02)
    assert max(polls) < 0.1  # no poll blocked either
    assert proc.state is ProcessState.CANCELLED
    assert proc.returncode == -signal.SIGKILL


@posix_only
def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored() -> None:
    script = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("pid", 0, flush=True)
    time.sleep(60)
    """
    proc = BackgroundProcess(python(script))
    proc.start()
    read_pids(proc, 1)
    started = time.monotonic()
    proc.cancel(grace_s=0.5)
    assert time.monotonic() - started < 4.0
    assert proc.state is ProcessState.CANCELLED
    assert proc.returncode == -signal.SIGKILL


def test_finished_process_is_not_held_up_by_a_grandchild_keeping_the_pipes() -> None:
    """The CLI exits but a detached helper inherited stdout/stderr: poll() must still report the end."""
    script = """
    import subprocess, sys
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    print("pid", helper.pid, flush=True)
    """
    proc = BackgroundProcess(python(script))
    proc.start()
    try:
        status = proc.wait(timeout_s=20)
        assert status.state is ProcessState.SUCCEEDED
        helper = int(next(line for line in proc.stdout_lines if line.startswith("pid")).split()[1])
    finally:
        for child in psutil.process_iter(["cmdline"]):
            if child.info["cmdline"] and "time.sleep(30)" in " ".join(child.info["cmdline"]):
                child.kill()
    assert gone(helper) or wait_until_gone([helper]) == []


# -- errors ----------------------------------------------------------------------------------------------


def test_cli_error_line_becomes_the_message() -> None:
    proc = BackgroundProcess(
        python(
            """
            import sys
            print("medidiff-progress denoise 1/4", file=sys.stderr)
            print("some warning", file=sys.stderr)
            print("medidiff: error: boom: the input has 4 dimensions", file=sys.stderr)
            sys.exit(2)
            """
        )
    )
    proc.start()
    status = proc.wait(timeout_s=30)
    assert status.state is ProcessState.FAILED
    assert status.returncode == 2
    assert status.progress == ProgressEvent("denoise", 1, 4)
    error = proc.error()
    assert isinstance(error, ProcessError)
    assert error.message == "medidiff could not restore the volume: boom: the input has 4 dimensions"
    assert "some warning" in error.details
    assert "medidiff-progress" not in error.details


def test_internal_error_and_plain_failure() -> None:
    internal = BackgroundProcess(
        python("import sys; print('medidiff: internal error: ValueError: x', file=sys.stderr); sys.exit(1)")
    )
    internal.start()
    internal.wait(timeout_s=30)
    error = internal.error()
    assert error is not None and error.message == "medidiff stopped on an internal error: ValueError: x"

    plain = BackgroundProcess(python("import sys; print('Traceback...', file=sys.stderr); sys.exit(3)"))
    plain.start()
    plain.wait(timeout_s=30)
    error = plain.error()
    assert error is not None
    assert error.message == MESSAGES["process_failed"].format(code=3)
    assert error.details == "Traceback..."


@posix_only
def test_killed_process_is_explained() -> None:
    proc = BackgroundProcess(python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    proc.start()
    status = proc.wait(timeout_s=30)
    assert status.state is ProcessState.FAILED
    assert status.returncode == -signal.SIGKILL
    error = proc.error()
    assert error is not None and "killed by signal SIGKILL" in error.message


def test_real_medidiff_cli_failure_propagates() -> None:
    """`python -m medidiff info /nonexistent`: a user error, exit 2, its one-line message shown."""
    proc = BackgroundProcess(
        [sys.executable, "-m", "medidiff", "info", "/nonexistent/scan.nii.gz"], cwd=str(REPO_ROOT)
    )
    proc.start()
    status = proc.wait(timeout_s=60)
    assert status.state is ProcessState.FAILED
    assert status.returncode == 2
    cli_lines = [line for line in proc.stderr_lines if line.startswith("medidiff: error: ")]
    assert cli_lines, proc.stderr_lines
    error = proc.error()
    assert error is not None
    assert (
        error.message == "medidiff could not restore the volume: " + cli_lines[-1][len("medidiff: error: ") :]
    )


def test_real_medidiff_restore_usage_error_propagates() -> None:
    """`python -m medidiff restore` without arguments: the CLI's one-line usage error reaches the user."""
    proc = BackgroundProcess([sys.executable, "-m", "medidiff", "restore"], cwd=str(REPO_ROOT))
    proc.start()
    status = proc.wait(timeout_s=60)
    assert status.returncode == 2
    error = proc.error()
    assert error is not None
    assert error.message.startswith("medidiff could not restore the volume: ")
    assert "arguments are required" in error.message and "--task" in error.details


def test_missing_program_raises_a_start_error(tmp_path: Path) -> None:
    proc = BackgroundProcess([str(tmp_path / "no-such-python"), "-m", "medidiff"])
    with pytest.raises(ProcessError, match="Could not start medidiff"):
        proc.start()
    assert proc.state is ProcessState.NOT_STARTED


def test_environment_is_passed(tmp_path: Path) -> None:
    env = {**os.environ, "MEDIDIFF_TEST_MARKER": "slicer-42"}
    proc = BackgroundProcess(
        python("import os; print(os.environ['MEDIDIFF_TEST_MARKER'], os.getcwd())"),
        env=env,
        cwd=str(tmp_path),
    )
    proc.start()
    assert proc.wait(timeout_s=30).state is ProcessState.SUCCEEDED
    assert proc.stdout_lines == [f"slicer-42 {tmp_path}"]
