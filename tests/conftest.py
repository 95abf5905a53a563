"""Shared fixtures: the real CIFAR-10 (MIA_DATA_ROOT, set by .ci/run) and tiny configs."""

import logging
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Where the CIFAR-10 python batches live (the README and .ci/run give ./data). Resolved once,
# here: tests hand it to runs in other folders (subprocesses, symlinks in temporary folders).
DATA_ROOT = os.path.abspath(
    os.environ.get("MIA_DATA_ROOT", os.path.join(REPO, "..", "shared", "data")))


@pytest.fixture(scope="session")
def data_root():
    """DATASET.ROOT of the real CIFAR-10; skipped when absent, except in CI where it must be."""
    if not os.path.isfile(os.path.join(DATA_ROOT, "cifar-10-batches-py", "data_batch_1")):
        if os.environ.get("CI"):
            pytest.fail(f"CI must have CIFAR-10 under MIA_DATA_ROOT={DATA_ROOT}")
        pytest.skip(f"CIFAR-10 not found under {DATA_ROOT} (set MIA_DATA_ROOT)")
    return DATA_ROOT


@pytest.fixture
def mia_warnings():
    """Messages of the warnings logged on the toolkit's "mia" logger during the test (it
    does not propagate to the root logger once a run has set it up, so caplog misses them)."""
    messages, handler = [], logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    log = logging.getLogger("mia")
    log.addHandler(handler)
    yield messages
    log.removeHandler(handler)


def tiny_opts(data_root, out_dir, **extra):
    """KEY VALUE list of a run that takes seconds on 2 cores and still overfits."""
    opts = {
        "DATASET.ROOT": data_root, "DATASET.DOWNLOAD": "False", "OUTPUT_DIR": str(out_dir),
        "VICTIM.TRAIN.SET_SIZE": "500", "VICTIM.TRAIN.NUM_EPOCHS": "15",
        "SHADOW.NUM_MODELS": "4", "SHADOW.TRAIN.MODELS_PER_PACK": "2",
        "ATTACKER.TRAIN.NUM_EPOCHS": "15", "ATTACKER.OPTIMIZER.ALPHA": "0.001",
        "ATTACKER.MODEL.LAYER_DIMS": "[16, 8]", "NUM_THREADS": "2",
    }
    opts.update(extra)
    return [x for kv in opts.items() for x in kv]
