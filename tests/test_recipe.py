"""Training recipes (engine/recipe.py): schedules, Nesterov momentum, label smoothing,
augmentation and MixUp do what they say, a pack with them equals its members trained alone (float64),
and an interrupted training with them resumes to the same weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from configs.config import build_cfg
from engine.checkpoint import TrainCheckpoint
from engine.pack import ChannelPack, ModelPack, build_pack
from engine.recipe import (
    AUGMENTS,
    CROP_PAD,
    SCHEDULES,
    Augment,
    MixUp,
    Recipe,
    Schedule,
    build_recipe,
)
from engine.trainer import fit, seeded_models
from utils.optim_names import AUGMENT_NAMES, SCHEDULER_NAMES
from victims import build_model

_CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _node(*opts, epochs=3, batch=8):
    cfg, _ = build_cfg("", ["OUTPUT_DIR", "/tmp/unused", "VICTIM.TRAIN.NUM_EPOCHS", str(epochs),
                            "VICTIM.TRAIN.BATCH_SIZE", str(batch), *opts])
    return cfg.SHADOW  # the shadows' section, after infer_cfg: as the victim's


def test_the_config_checks_know_every_schedule_and_augmentation():
    assert set(SCHEDULER_NAMES) == set(SCHEDULES) and set(AUGMENT_NAMES) == set(AUGMENTS)


def test_schedules_by_step():
    warm = Schedule("onecycle", total=10, warmup=4, milestones=[], decay=0.1)
    assert [warm(t) for t in range(10)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    cos = Schedule("cosine", total=5, warmup=0, milestones=[], decay=0.1)
    assert [cos(t) for t in range(5)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * t / 5)) for t in range(5)])
    step = Schedule("multistep", total=10, warmup=0, milestones=[6, 3], decay=0.1)
    assert [step(t) for t in range(10)] == pytest.approx([1] * 3 + [0.1] * 3 + [0.01] * 4)
    assert [Schedule("none", 6, 2, [], 0.1)(t) for t in range(6)] == [0.5, 1, 1, 1, 1, 1]


def test_fit_applies_the_schedule_every_step_and_defaults_keep_a_constant_rate():
    x, y = torch.randn(40, 3, 8, 8), torch.randint(0, 10, (40,))
    idx = torch.arange(40)[None]
    # 40 records, batch 8: 5 steps an epoch, 3 epochs; 1 warm-up epoch, then linear decay
    node = _node("VICTIM.OPTIMIZER.SCHEDULER", "onecycle", "VICTIM.OPTIMIZER.WARMUP_EPOCHS", "1")
    pack = build_pack(seeded_models(lambda: _tiny_cnn(), [1]), x)
    recipe = build_recipe(node, pack.parameters(), _CPU, steps_per_epoch=5)
    lrs, criterion = [], recipe.criterion

    def logged(logits, targets):  # runs before each optimizer step: the rate it will use
        lrs.append(recipe.optimizer.param_groups[0]["lr"])
        return criterion(logits, targets)

    recipe.criterion = logged
    fit(pack, x, y, idx, epochs=3, batch_size=8, recipe=recipe, seeds=[1], desc="t")
    alpha = node.OPTIMIZER.ALPHA
    want = [alpha * (t + 1) / 5 for t in range(5)] + [alpha * (10 - t) / 10 for t in range(10)]
    assert lrs == pytest.approx(want)
    plain = build_recipe(_node(), pack.parameters(), _CPU, steps_per_epoch=5)
    assert plain.scheduler is None and plain.augment is None  # the defaults: as before


def _tiny_cnn():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 10))


def test_nesterov_and_label_smoothing_reach_the_optimizer_and_loss():
    node = _node("VICTIM.OPTIMIZER.NAME", "sgd", "VICTIM.OPTIMIZER.MOMENTUM", "0.9",
                 "VICTIM.OPTIMIZER.NESTEROV", "True", "VICTIM.TRAIN.LABEL_SMOOTHING", "0.2")
    recipe = build_recipe(node, _tiny_cnn().parameters(), _CPU, steps_per_epoch=1)
    group = recipe.optimizer.param_groups[0]
    assert group["nesterov"] and group["momentum"] == 0.9
    logits, targets = torch.randn(6, 10), torch.randint(0, 10, (6,))
    logp = logits.log_softmax(1)  # smoothed target: 0.8 one-hot + 0.2 uniform
    want = -(0.8 * logp.gather(1, targets[:, None])[:, 0] + 0.2 * logp.mean(1))
    torch.testing.assert_close(recipe.criterion(logits, targets), want)


def test_augment_flips_and_crops_as_reflect_padding_then_slicing():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, 32, 32, generator=gen)
    idx = torch.randint(0, 30, (2, 16), generator=gen)
    for kind in ("flip", "flip_crop"):
        aug = Augment(kind)
        draws = torch.stack([aug.draw(gen, 16) for _ in range(2)])
        out = aug.apply(x, idx, draws)
        assert out.shape == (2, 16, 3, 32, 32)
        pad = CROP_PAD if kind == "flip_crop" else 0
        assert draws[..., 1:].min() >= 0 and draws[..., 1:].max() <= 2 * pad
        padded = F.pad(x, (pad,) * 4, mode="reflect") if pad else x
        for k in range(2):
            for b in range(16):
                flip, dy, dx = draws[k, b].tolist()
                want = padded[idx[k, b], :, dy:dy + 32, dx:dx + 32]
                torch.testing.assert_close(out[k, b], want.flip(-1) if flip else want)
        assert 0 < draws[..., 0].float().mean() < 1  # some flipped, some not
    if pad:
        assert (draws[..., 1:] != pad).any()  # and some shifted


def test_mixup_draws_beta_weights_and_partners_from_the_members_generator():
    mix = MixUp(0.4)
    draws = mix.draw(torch.Generator().manual_seed(1), 20000)
    assert torch.equal(draws, mix.draw(torch.Generator().manual_seed(1), 20000))
    partner, lam = draws[:, 0], draws[:, 1].double() / MixUp.SCALE
    assert partner.min() >= 0 and partner.max() < 20000 and partner.unique().numel() > 12000
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); most mass near 0 and 1 for a < 1
    assert abs(lam.mean() - 0.5) < 0.01 and abs(lam.var() - 1 / (4 * 1.8)) < 0.005
    assert (lam < 0.1).float().mean() > 0.2


def test_mixup_trains_on_mixed_records_and_mixes_the_losses_alike():
    # one full-batch SGD step (lr 1) of a linear model: its weights move by minus the
    # gradient of mean(lam * CE(f(x_mix), y) + (1 - lam) * CE(f(x_mix), y_partner))
    torch.manual_seed(0)
    n, seed = 12, 3
    x, y = torch.randn(n, 5, dtype=torch.float64), torch.randint(0, 3, (n,))
    idx = torch.arange(n)[None]
    model = torch.nn.Linear(5, 3).double()
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    pack = build_pack([model], x)
    mix = MixUp(0.5)
    recipe = Recipe(torch.optim.SGD(pack.parameters(), lr=1.0),
                    lambda out, t: F.cross_entropy(out, t, reduction="none"), mixup=mix)
    fit(pack, x, y, idx, epochs=1, batch_size=n, recipe=recipe, seeds=[seed], desc="t")
    gen = torch.Generator().manual_seed(seed)  # the member's draws, as the plan takes them
    order = torch.randperm(n, generator=gen)
    draws = mix.draw(gen, n)
    partner, lam = draws[:, 0], draws[:, 1].double() / MixUp.SCALE
    xs, ys = x[order], y[order]
    mixed = lam[:, None] * xs + (1 - lam[:, None]) * x[partner]
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    out = mixed @ w.t() + b
    loss = (lam * F.cross_entropy(out, ys, reduction="none")
            + (1 - lam) * F.cross_entropy(out, y[partner], reduction="none")).mean()
    loss.backward()
    state = pack.member_state_dicts()[0]
    torch.testing.assert_close(state["weight"], w0 - w.grad)
    torch.testing.assert_close(state["bias"], b0 - b.grad)


def _train_pack(arch_build, x, y, idx, seeds, opts, epochs=2, batch=8, checkpoint=None,
                on_epoch=None):
    node = _node(*opts, epochs=epochs, batch=batch)
    pack = build_pack(seeded_models(arch_build, seeds), x)
    recipe = build_recipe(node, pack.parameters(), _CPU,
                          steps_per_epoch=math.ceil(idx.shape[1] / batch))
    fit(pack, x, y, idx, epochs=epochs, batch_size=batch, recipe=recipe, seeds=seeds,
        desc="t", checkpoint=checkpoint, on_epoch=on_epoch)
    return pack, recipe


_MODERN = ["VICTIM.OPTIMIZER.NAME", "sgd", "VICTIM.OPTIMIZER.ALPHA", "0.05",
           "VICTIM.OPTIMIZER.MOMENTUM", "0.9", "VICTIM.OPTIMIZER.NESTEROV", "True",
           "VICTIM.OPTIMIZER.GAMMA", "5e-4", "VICTIM.OPTIMIZER.SCHEDULER", "onecycle",
           "VICTIM.OPTIMIZER.WARMUP_EPOCHS", "1", "VICTIM.TRAIN.LABEL_SMOOTHING", "0.1",
           "VICTIM.TRAIN.AUGMENT", "flip_crop", "VICTIM.TRAIN.MIXUP_ALPHA", "0.4"]


@pytest.mark.parametrize("arch,form", [("simplecnn", ModelPack), ("resnet18", ChannelPack)])
def test_pack_with_the_modern_recipe_equals_its_members_alone(arch, form):
    # each member draws its own shuffles and crops from its own generator: a pack of 3
    # is 3 separate trainings (float64, weights equal to 1e-9)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        shape = (3, 16, 16)
        options = dict(layer_dims=(4, 4, 8, 8)) if arch == "resnet18" else {}
        build = lambda: build_model(arch, 10, shape, **options)  # noqa: E731
        torch.manual_seed(0)
        x, y = torch.randn(60, *shape), torch.randint(0, 10, (60,))
        idx = torch.stack([torch.randperm(60)[:20] for _ in range(3)])
        seeds = [5, 6, 7]
        pack, _ = _train_pack(build, x, y, idx, seeds, _MODERN)
        assert type(pack) is form
        states = pack.member_state_dicts()
        for j, seed in enumerate(seeds):
            alone, _ = _train_pack(build, x, y, idx[j:j + 1], [seed], _MODERN)
            for key, value in alone.member_state_dicts()[0].items():
                torch.testing.assert_close(states[j][key], value, rtol=1e-7, atol=1e-9)
        # augmentation changed the training (the same recipe without it ends elsewhere)
        plain, _ = _train_pack(build, x, y, idx[:1], seeds[:1],
                               _MODERN + ["VICTIM.TRAIN.AUGMENT", "none"])
        key = next(iter(states[0]))
        assert not torch.allclose(plain.member_state_dicts()[0][key], states[0][key])
    finally:
        torch.set_default_dtype(old)


class _Killed(Exception):
    pass


def test_resume_with_schedule_and_augmentation_equals_uninterrupted(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 3, 16, 16, generator=gen), torch.randint(0, 10, (80,), generator=gen)
    idx = torch.stack([torch.randperm(80, generator=gen)[:40] for _ in range(2)])
    build = lambda: build_model("resnet18", 10, (3, 16, 16), layer_dims=(4, 4, 8, 8))  # noqa: E731

    def run(folder, kill_after=None, minutes=1e-6):
        def on_epoch(epoch, losses):
            if epoch + 1 == kill_after:
                raise _Killed()
        ckpt = TrainCheckpoint(str(tmp_path / folder / "inflight.pth"), minutes, "tag", "pack")
        return _train_pack(build, x, y, idx, [3, 4], _MODERN, epochs=4, checkpoint=ckpt,
                           on_epoch=on_epoch)

    whole, whole_recipe = run("whole", minutes=0.0)
    with pytest.raises(_Killed):
        run("cut", kill_after=3)  # saved after epochs 1 and 2
    saved = torch.load(tmp_path / "cut" / "inflight.pth", weights_only=True)
    assert saved["epoch"] == 2 and saved["scheduler"]["last_epoch"] == 2 * 5
    assert saved["perms"].shape == (2, 40, 1 + Augment.NUM_DRAWS + MixUp.NUM_DRAWS)
    resumed, resumed_recipe = run("cut")
    a, b = resumed.state_dict(), whole.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    assert resumed_recipe.scheduler.state_dict() == whole_recipe.scheduler.state_dict()
