"""A readable log for people (stdout + run.log) and a TSV record for scripts."""

import logging
import os
import sys

_LOGGER = "mia"


def setup_logger(run_dir, prefix=""):
    """The toolkit's logger, writing to stdout and (unless run_dir is None) appending to
    run_dir/run.log."""
    log = logging.getLogger(_LOGGER)
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter(f"{prefix}[%(asctime)s] %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if run_dir is not None:
        handlers.append(logging.FileHandler(os.path.join(run_dir, "run.log")))
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False
    return log


class TsvLog:
    """Append-only TSV: one row per epoch or test result, flushed at once."""

    COLUMNS = ("stage", "model", "epoch", "loss", "metric", "value")

    def __init__(self, path):
        self.path = path
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("\t".join(self.COLUMNS) + "\n")

    def row(self, **fields):
        values = [fields.get(c, "") for c in self.COLUMNS]
        text = "\t".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values)
        with open(self.path, "a") as f:
            f.write(text + "\n")


class NullTsv:
    """TsvLog's interface for processes that keep no log (ranks other than 0)."""

    def row(self, **fields):
        pass
