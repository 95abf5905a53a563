"""CUDA-graph training steps (engine.trainer.CudaGraphStep).

On CPU the graph is emulated: the capture records the step without running it and a
replay runs it again on the captured index tensor, as a CUDA graph replays its kernels on
the captured memory. That checks what the toolkit adds around torch.cuda.graph (warm-up
steps, which steps replay, the index copy, the loss total, the last shorter batch, the
optimizer flag, the fallback and that a run tries it once); the real capture runs where
CUDA is present.
"""

from types import SimpleNamespace

import pytest
import torch

from configs.config import build_cfg
from engine.optim import CRITERIA
from engine.pack import ModelPack
from engine.recipe import Recipe, Schedule, build_augment
from engine.setup import setup_run
from engine.trainer import (
    CudaGraphStep,
    GraphSteps,
    cuda_step_graph,
    fit,
    reset_step_graphs,
    seeded_models,
)
from victims import MODELS

SEEDS = [3, 4]


class Emulated(CudaGraphStep):
    captures = replays = 0
    flags_at_capture = None

    def _warm(self, idx):
        self.step(idx)

    def _record(self, fn):
        type(self).captures += 1
        type(self).flags_at_capture = [g["capturable"] for g in self.optimizer.param_groups]

        def replay():
            type(self).replays += 1
            fn()
        return SimpleNamespace(replay=replay)


class Failing(Emulated):
    built = attempts = 0

    def __init__(self, *args):
        super().__init__(*args)
        type(self).built += 1

    def _record(self, fn):
        type(self).attempts += 1
        raise RuntimeError("operation not permitted when stream is capturing")


@pytest.fixture(autouse=True)
def counters():
    Emulated.captures = Emulated.replays = 0
    Emulated.flags_at_capture = None
    Failing.built = Failing.attempts = 0
    yield
    reset_step_graphs()


def _data(device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (120,), generator=g).to(device)
    idx = torch.stack([torch.randperm(120, generator=g)[:40] for _ in SEEDS]).to(device)
    return x, y, idx


def _train(step_graph, fused=True, device="cpu", epochs=4, augment=None, schedule=None):
    """augment: an AUGMENT name; schedule: a SCHEDULER name (3 steps an epoch)."""
    x, y, idx = _data(device)
    pack = ModelPack(seeded_models(MODELS["simplecnn"], SEEDS)).to(device)
    opt = torch.optim.Adam(pack.parameters(), lr=1e-3, fused=fused)
    scheduler = (torch.optim.lr_scheduler.LambdaLR(opt, Schedule(schedule, 3 * epochs, 0, [], 1))
                 if schedule else None)
    recipe = Recipe(opt, CRITERIA["classifier"]["ce"], scheduler,
                    build_augment(augment) if augment else None)
    losses = []
    fit(pack, x, y, idx, epochs=epochs, batch_size=16, recipe=recipe, seeds=SEEDS, desc="test",
        on_epoch=lambda e, loss: losses.append(loss), step_graph=step_graph)
    return pack.member_state_dicts(), torch.stack(losses), opt


def _assert_same(a, b):
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


def test_replayed_steps_train_as_eager_steps():
    eager, eager_loss, _ = _train(None)
    graphed, graphed_loss, opt = _train(Emulated)
    # 40 records in batches of 16: two full steps and one of 8 per epoch; 4 epochs give
    # 8 full steps: 3 warm-up, then one capture and 5 replays (the captured step included)
    assert (Emulated.captures, Emulated.replays) == (1, 5)
    _assert_same(eager, graphed)
    assert torch.equal(eager_loss, graphed_loss)
    # the optimizer is capturable while capturing only
    assert Emulated.flags_at_capture == [True]
    assert [g["capturable"] for g in opt.param_groups] == [False]


def test_replayed_steps_with_augmentation_train_as_eager_steps():
    # the step's flips and crops travel with its record indices into the captured tensor
    eager, eager_loss, _ = _train(None, augment="flip_crop")
    graphed, graphed_loss, _ = _train(Emulated, augment="flip_crop")
    assert (Emulated.captures, Emulated.replays) == (1, 5)
    _assert_same(eager, graphed)
    assert torch.equal(eager_loss, graphed_loss)
    plain, _, _ = _train(None)
    assert not torch.equal(plain[0]["features.0.weight"], eager[0]["features.0.weight"])


def test_a_learning_rate_schedule_is_not_captured():
    # a replay would keep the captured step's learning rate
    eager, eager_loss, _ = _train(None, schedule="cosine")
    graphed, graphed_loss, _ = _train(Emulated, schedule="cosine")
    assert Emulated.captures == 0 and Emulated.replays == 0
    _assert_same(eager, graphed)
    assert torch.equal(eager_loss, graphed_loss)


def test_replay_reads_each_steps_records():
    # a replay that ran on the captured step's records again would train differently
    class Stale(Emulated):
        def _record(self, fn):
            frozen = self.static_idx.clone()

            def replay():
                self.static_idx.copy_(frozen)
                fn()
            return SimpleNamespace(replay=replay)

    eager, _, _ = _train(None)
    stale, _, _ = _train(Stale)
    assert not torch.equal(eager[0]["features.0.weight"], stale[0]["features.0.weight"])


def test_failed_capture_falls_back_to_eager_steps(mia_warnings):
    eager, eager_loss, _ = _train(None)
    fallback, fallback_loss, _ = _train(Failing)
    warnings = [m for m in mia_warnings if "CUDA graph capture failed" in m]
    assert len(warnings) == 1 and "CUDA_GRAPHS False" in warnings[0]
    _assert_same(eager, fallback)
    assert torch.equal(eager_loss, fallback_loss)


def test_a_failed_capture_is_not_retried_by_later_fits(mia_warnings):
    # a run's fits (victim, each shadow pack, attack models) share one GraphSteps
    eager, eager_loss, _ = _train(None)
    steps = GraphSteps(Failing)
    for _ in range(2):
        fallback, fallback_loss, _ = _train(steps)
        _assert_same(eager, fallback)
        assert torch.equal(eager_loss, fallback_loss)
    # the second fit neither warmed up nor captured: it got the plain step
    assert (Failing.built, Failing.attempts) == (1, 1)
    assert len([m for m in mia_warnings if "CUDA graph capture failed" in m]) == 1


def test_step_graphs_last_one_run_per_device(tmp_path):
    cuda = torch.device("cuda")
    steps = cuda_step_graph(True, cuda)
    assert isinstance(steps, GraphSteps) and steps.step_cls is CudaGraphStep
    assert cuda_step_graph(True, cuda) is steps
    assert cuda_step_graph(True, torch.device("cuda:1")) is not steps
    steps.failed = True
    cfg, _ = build_cfg("", ["OUTPUT_DIR", str(tmp_path), "DEVICE", "cpu"])
    setup_run(cfg, ())  # a new run tries the capture again
    assert not cuda_step_graph(True, cuda).failed


def test_only_fused_optimizers_are_captured():
    _train(Emulated, fused=False)
    assert Emulated.captures == 0 and Emulated.replays == 0


def test_graphs_only_on_cuda():
    assert cuda_step_graph(True, torch.device("cpu")) is None
    assert cuda_step_graph(False, torch.device("cuda")) is None
    assert isinstance(cuda_step_graph(True, torch.device("cuda")), GraphSteps)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_training_equals_eager_on_cuda(monkeypatch, mia_warnings):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    eager, eager_loss, _ = _train(None, device="cuda")
    graphed, graphed_loss, _ = _train(CudaGraphStep, device="cuda")
    assert not mia_warnings  # captured, not fallen back to eager steps
    for sa, sb in zip(eager, graphed):
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(eager_loss, graphed_loss, rtol=1e-5, atol=1e-6)
