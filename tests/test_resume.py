"""Crash safety: a run killed with SIGKILL at several points, then rerun with the same
command, ends with the metrics of an uninterrupted run; Ctrl-C and SIGTERM stop cleanly;
in-flight checkpoints resume inside a training; one process at a time writes a run folder."""

import glob
import json
import os
import re
import signal
import socket
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


def _cmd(data_root, out, **extra):
    return [sys.executable, os.path.join(REPO, "run_attack.py"),
            *tiny_opts(data_root, out, **_OPTS, **extra)]


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
    sent = time.perf_counter()
    proc.send_signal(sig)
    proc.wait(timeout=120)
    proc.stop_seconds = time.perf_counter() - sent
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
def reference_run(data_root, tmp_path_factory):
    """An uninterrupted run, on whose folder a second process is started while the run is
    paused (SIGSTOP) in victim training: (folder, run's pid, second process's result)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    cmd = _cmd(data_root, out)
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    while not _tsv_has("train\tvictim\t3\t")(out) and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # so that it cannot finish before the second starts
    try:
        started = time.perf_counter()
        second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        second.seconds = time.perf_counter() - started
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=1800) == 0, first.stderr.read()[-2000:]
    return out, first.pid, second


@pytest.fixture(scope="module")
def reference(reference_run):
    return _metrics(reference_run[0])


@pytest.mark.parametrize("point,ready", [
    ("during victim training", _tsv_has("train\tvictim\t5\t")),
    ("during the first shadow pack", _tsv_has("train\tshadow_000\t3\t")),
    ("between shadow packs", _shadows_saved(2)),
    ("during the second shadow pack", _tsv_has("train\tshadow_002\t4\t")),
    ("during attack training", _tsv_has("attack\tattack_model_0.0\t5\t")),
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
    # the killed run died holding the folder's lock; the rerun took it over and said so
    assert f"took over {out / 'run.lock'}" in (out / "run.log").read_text(), point


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(data_root, tmp_path):
    out = tmp_path / "run"
    proc = _start_and_kill(_cmd(data_root, out), out, _tsv_has("train\tshadow_000\t2\t"),
                           sig=signal.SIGINT)
    assert proc.returncode == 130
    err = proc.stderr.read()
    assert "rerun the same command" in err and "Traceback" not in err
    assert not glob.glob(str(out / "**" / "*.tmp"), recursive=True)


def test_sigterm_mid_pack_stops_cleanly_then_rerun_equals_uninterrupted(reference, data_root,
                                                                         tmp_path):
    out = tmp_path / "run"
    proc = _start_and_kill(_cmd(data_root, out), out, _tsv_has("train\tshadow_002\t4\t"),
                           sig=signal.SIGTERM)
    assert proc.returncode == 143
    assert proc.stop_seconds < 30  # the pack's worker stops at its next step
    err = proc.stderr.read()
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1] == ("terminated (SIGTERM): rerun the same command "
                                             "(same OUTPUT_DIR) to resume")
    assert not glob.glob(str(out / "**" / "*.tmp"), recursive=True)
    assert AttackData.load(out / "attacker_files" / "attack_data_train").shadow_ids() == [0, 1]
    assert (out / "run.lock").read_text() == ""  # released: the folder was left in order
    subprocess.run(_cmd(data_root, out), cwd=REPO, check=True, capture_output=True)
    assert _metrics(out) == reference
    assert "took over" not in (out / "run.log").read_text()


def test_second_process_on_a_held_folder_is_refused_while_the_first_finishes(reference_run):
    out, first_pid, second = reference_run
    assert second.returncode == 1
    assert second.seconds < 60  # at once: before any data is loaded
    line = second.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: OUTPUT_DIR: {out} is in use by ")
    assert f"process {first_pid} on host {socket.gethostname()}" in line
    log = (out / "run.log").read_text()
    assert log.count("run folder ") == 1 and "took over" not in log  # one writer, untouched
    assert (out / "run.lock").read_text() == ""


def test_kills_inside_victim_and_pack_resume_from_inflight_checkpoints(reference_run, data_root,
                                                                       tmp_path):
    out = tmp_path / "run"
    every_epoch = {"VICTIM.TRAIN.CHECKPOINT_MINUTES": "1e-6",
                   "SHADOW.TRAIN.CHECKPOINT_MINUTES": "1e-6"}
    cmd = _cmd(data_root, out, **every_epoch)
    victim_file = out / "victim" / "inflight.pth"
    pack_file = out / "shadow_files" / "inflight_shadow_002.pth"
    _start_and_kill(cmd, out, lambda o: _tsv_has("train\tvictim\t6\t")(o) and victim_file.exists())
    _start_and_kill(cmd, out, lambda o: _tsv_has("train\tshadow_002\t5\t")(o)
                    and pack_file.exists())
    # CHECKPOINT_MINUTES changes no result, so it is no part of any fingerprint: the last
    # run, without saves, still resumes the pack and keeps the victim
    subprocess.run(_cmd(data_root, out), cwd=REPO, check=True, capture_output=True)
    log = (out / "run.log").read_text()
    assert int(re.search(r"victim: resuming after epoch (\d+)", log)[1]) >= 5
    assert int(re.search(r"shadow_002\+: resuming after epoch (\d+)", log)[1]) >= 4
    assert _metrics(out) == _metrics(reference_run[0])
    assert (out / "scores.csv").read_text() == (reference_run[0] / "scores.csv").read_text()
    assert not victim_file.exists() and not glob.glob(str(out / "shadow_files" / "inflight_*"))
