"""Long runs on shared machines, piece by piece: one writer per run folder (run.lock) and
in-flight checkpoints that resume a training exactly. tests/test_resume.py kills whole runs."""

import errno
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from engine.checkpoint import TrainCheckpoint
from engine.optim import get_criterion
from engine.pack import ModelPack
from engine.trainer import fit, seeded_models
from utils.errors import RunError
from utils.lock import RunLock
from victims import build_model

_HOLD = ("import sys; sys.path.insert(0, {repo!r}); from utils.lock import RunLock; "
         "lock = RunLock({folder!r}).acquire(); print('held', flush=True); sys.stdin.read()")


def _holder(folder):
    """A process that holds folder's lock until killed or its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD.format(repo=REPO, folder=str(folder))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_live_holder_is_named_and_a_dead_one_taken_over(tmp_path):
    proc = _holder(tmp_path)
    with pytest.raises(RunError) as e:
        RunLock(str(tmp_path)).acquire()
    msg = str(e.value)
    assert str(tmp_path) in msg and f"process {proc.pid} on host {socket.gethostname()}" in msg
    assert "\n" not in msg
    proc.send_signal(signal.SIGKILL)  # dies holding it: the kernel drops the lock
    proc.wait()
    lock = RunLock(str(tmp_path)).acquire()
    assert lock.stale.split()[:2] == [str(proc.pid), socket.gethostname()]
    assert (tmp_path / "run.lock").read_text().split()[0] == str(os.getpid())
    lock.release()
    assert (tmp_path / "run.lock").read_text() == ""
    again = RunLock(str(tmp_path)).acquire()  # a released folder is not stale
    assert again.stale == ""
    again.release()


def test_file_system_without_locks_runs_unguarded(tmp_path, monkeypatch):
    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr("utils.lock.fcntl.flock", no_locks)
    lock = RunLock(str(tmp_path)).acquire()
    assert lock.unsupported == "No locks available"
    lock.release()


class _Killed(Exception):
    pass


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared, loaded machine two threads wait on each other
    (measured 10x slower here) and these tests compare bits, not speed."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _train(tmp_path, epochs=4, kill_after=None, minutes=1e-6, tag="a"):
    """A 2-member SimpleCNN pack trained on random images with an in-flight checkpoint;
    kill_after=e raises once e epochs are done (before that epoch's save)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(150, 3, 32, 32, generator=gen), torch.randint(0, 10, (150,), generator=gen)
    idx = torch.stack([torch.randperm(150, generator=gen)[:100] for _ in range(2)])
    seeds = [11, 12]
    pack = ModelPack(seeded_models(lambda: build_model("simplecnn", 10, (3, 32, 32)), seeds))
    opt = torch.optim.Adam(pack.parameters(), lr=1e-3, fused=True)
    ckpt = TrainCheckpoint(str(tmp_path / "inflight.pth"), minutes, tag, "pack")

    def on_epoch(epoch, losses):
        if epoch + 1 == kill_after:
            raise _Killed()

    fit(pack, x, y, idx, epochs=epochs, batch_size=32, optimizer=opt, seeds=seeds,
        criterion=get_criterion("classifier", "ce"), desc="pack", on_epoch=on_epoch,
        checkpoint=ckpt)
    return pack, opt


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_inflight_checkpoint_equals_uninterrupted(tmp_path):
    whole, whole_opt = _train(tmp_path / "whole", minutes=0.0)
    assert not (tmp_path / "whole" / "inflight.pth").exists()  # 0: never saved
    with pytest.raises(_Killed):
        _train(tmp_path / "cut", kill_after=3)  # saved after epochs 1 and 2
    assert torch.load(tmp_path / "cut" / "inflight.pth", weights_only=True)["epoch"] == 2
    resumed, resumed_opt = _train(tmp_path / "cut")
    assert _same(resumed.state_dict(), whole.state_dict())  # bitwise
    for p, q in zip(resumed_opt.state.values(), whole_opt.state.values()):
        assert _same(p, q)


def test_inflight_checkpoint_of_other_settings_is_ignored(tmp_path):
    whole, _ = _train(tmp_path / "whole", minutes=0.0)
    with pytest.raises(_Killed):
        _train(tmp_path / "cut", kill_after=3, tag="other settings")
    fresh, _ = _train(tmp_path / "cut", minutes=0.0)
    assert _same(fresh.state_dict(), whole.state_dict())
