"""The two kinds of error a user sees as one line (run_attack.py maps them to exit codes),
and the stop a scheduler asks for with SIGTERM."""

import signal
import threading
from contextlib import contextmanager


class UsageError(Exception):
    """Bad configuration or input the user can fix (exit code 2)."""


class RunError(Exception):
    """A run that cannot go on (exit code 1): diverged training, unreadable artifact, ..."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption or time limit): stops the run as Ctrl-C does."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextmanager
def sigterm_interrupts():
    """Within the block, SIGTERM raises Terminated in the main thread (as Ctrl-C raises
    KeyboardInterrupt), so the run unwinds: workers stop at their next step, every file
    is whole. The previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
