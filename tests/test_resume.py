"""Crash safety: a run killed with SIGKILL at several points, then rerun with the same
command, ends with the metrics of an uninterrupted run; Ctrl-C stops cleanly."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, tiny_opts
from datasets import AttackData

# One pack per round (NUM_WORKERS 1), so that a kill can fall between packs.
_OPTS = {"NUM_WORKERS": "1", "SHADOW.NUM_MODELS": "4", "SHADOW.TRAIN.MODELS_PER_PACK": "2",
         "VICTIM.TRAIN.NUM_EPOCHS": "12", "ATTACKER.TRAIN.NUM_EPOCHS": "40"}
_COMPARED = ("overall", "per_class", "victim", "shadows")


def _cmd(data_root, out):
    return [sys.executable, os.path.join(REPO, "run_attack.py"),
            *tiny_opts(data_root, out, **_OPTS)]


def _metrics(out):
    with open(out / "metrics.json") as f:
        m = json.load(f)
    return {k: m[k] for k in _COMPARED}


def _start_and_kill(cmd, out, ready, sig=signal.SIGKILL, timeout=300):
    """Start the run, send `sig` once ready(out) is true; return the finished process."""
    # a run started from a background job inherits SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler: give the run the default disposition, as a terminal does
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + timeout
    while not ready(out):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the run ended before the kill point: {proc.stderr.read()[-500:]}")
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def _tsv_has(marker):
    def ready(out):
        path = out / "attack.log.tsv"
        return path.exists() and marker in path.read_text()
    return ready


def _shadows_saved(count):
    def ready(out):
        path = out / "attacker_files" / "attack_data_train"
        try:
            return path.exists() and len(AttackData.load(path).shadow_ids()) >= count
        except Exception:
            return False
    return ready


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_cmd(data_root, out), cwd=REPO, check=True, capture_output=True)
    return _metrics(out)


@pytest.mark.parametrize("point,ready", [
    ("during victim training", _tsv_has("train\tvictim\t5\t")),
    ("during the first shadow pack", _tsv_has("train\tshadow_000\t3\t")),
    ("between shadow packs", _shadows_saved(2)),
    ("during the second shadow pack", _tsv_has("train\tshadow_002\t4\t")),
    ("during attack training", _tsv_has("attack\tattack_model_0\t5\t")),
])
def test_sigkill_then_rerun_equals_uninterrupted(point, ready, reference, data_root, tmp_path):
    out = tmp_path / "run"
    proc = _start_and_kill(_cmd(data_root, out), out, ready)
    assert proc.returncode == -signal.SIGKILL, point
    assert not (out / "metrics.json").exists()
    data_file = out / "attacker_files" / "attack_data_train"
    if data_file.exists():  # whatever was saved is whole: complete packs, no duplicates
        ids = AttackData.load(data_file).shadow_ids()
        assert ids in ([0, 1], [0, 1, 2, 3])
    subprocess.run(_cmd(data_root, out), cwd=REPO, check=True, capture_output=True)
    assert _metrics(out) == reference, point
    assert not glob.glob(str(out / "**" / "*.tmp"), recursive=True)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(data_root, tmp_path):
    out = tmp_path / "run"
    proc = _start_and_kill(_cmd(data_root, out), out, _tsv_has("train\tshadow_000\t2\t"),
                           sig=signal.SIGINT)
    assert proc.returncode == 130
    err = proc.stderr.read()
    assert "rerun the same command" in err and "Traceback" not in err
    assert not glob.glob(str(out / "**" / "*.tmp"), recursive=True)
