"""The two kinds of error a user sees as one line (run_attack.py maps them to exit codes)."""


class UsageError(Exception):
    """Bad configuration or input the user can fix (exit code 2)."""


class RunError(Exception):
    """A run that cannot go on (exit code 1): diverged training, unreadable artifact, ..."""
