"""airbench94's initialisation of fastnet (MODEL.INIT airbench: dirac convolutions, a frozen
whitening stem) and its batch-norm bias learning rate (OPTIMIZER.NORM_BIAS_LR_SCALE):
each against an independent computation, in a pack as one by one (float64)."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine.pack
from configs.config import build_cfg
from engine.classifier import build_classifier_pack
from engine.optim import CRITERIA, build_optimizer, classifier_param_groups
from engine.pack import NORM_TYPES, ChannelPack, build_pack
from engine.trainer import fit, seeded_models
from utils.errors import UsageError
from utils.fingerprint import fingerprint, flatten
from utils.logging import NullTsv
from victims import build_model
from victims.cifar_nets import airbench_init, patch_whitening

_DIMS = (4, 8, 8)
_SHAPE = (3, 12, 12)


@pytest.fixture(autouse=True)
def float64(monkeypatch):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    monkeypatch.setattr(engine.pack, "_VERDICTS", {})  # build_pack's probe as in a new process
    yield
    torch.set_default_dtype(old)


def _numpy_patches(x, k):
    """Every k x k patch of every image, flattened channel-major, by explicit slicing."""
    n, c, h, w = x.shape
    return np.array([x[i, :, r:r + k, s:s + k].reshape(-1)
                     for i in range(n) for r in range(h - k + 1) for s in range(w - k + 1)])


def test_patch_whitening_gives_the_patches_unit_second_moment():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(12, 12))  # correlated patch directions of very different scales
    x = np.einsum("ij,njhw->nihw", mix.reshape(12, 12)[:3, :3], rng.normal(size=(40, 3, 9, 9)))
    x = x + 0.3 * rng.normal(size=x.shape)
    filters = patch_whitening(torch.as_tensor(x), 2).double()
    assert filters.shape == (24, 3, 2, 2)
    torch.testing.assert_close(filters[12:], -filters[:12])
    patches = _numpy_patches(x, 2)
    moment = patches.T @ patches / len(patches)
    values = np.linalg.eigvalsh(moment)
    out = F.conv2d(torch.as_tensor(x), filters[:12]).permute(0, 2, 3, 1).reshape(-1, 12).numpy()
    got = out.T @ out / len(out)
    # each direction of the patches scaled to variance lambda / (lambda + eps), uncorrelated
    np.testing.assert_allclose(np.sort(np.diag(got)), values / (values + 5e-4), rtol=2e-5)
    np.testing.assert_allclose(got - np.diag(np.diag(got)), 0, atol=2e-5)


def test_airbench_init_makes_identity_convolutions_and_freezes_the_stem():
    torch.manual_seed(0)
    model = build_model("fastnet", 10, _SHAPE, layer_dims=_DIMS)
    x = torch.randn(30, *_SHAPE)
    airbench_init(model, x)
    assert not model.stem.weight.requires_grad and model.stem.bias.requires_grad
    torch.testing.assert_close(model.stem.weight.detach(), patch_whitening(x, 2).double())
    with torch.no_grad():
        for group in model.groups:
            m = min(group.conv1.in_channels, group.conv1.out_channels)
            h = torch.randn(2, group.conv1.in_channels, 6, 6)
            torch.testing.assert_close(group.conv1(h)[:, :m], h[:, :m])  # identity on m
            h = torch.randn(2, group.conv2.in_channels, 6, 6)
            torch.testing.assert_close(group.conv2(h), h)
    with pytest.raises(TypeError, match="FastNet"):
        airbench_init(build_model("resnet18", 10, (3, 8, 8), layer_dims=(4, 4, 8, 8)), x)
    # from a saved state: only the stem is frozen, the weights are left to load_state_dict
    fresh = build_model("fastnet", 10, _SHAPE, layer_dims=_DIMS)
    before = fresh.stem.weight.detach().clone()
    airbench_init(fresh)
    assert not fresh.stem.weight.requires_grad and torch.equal(fresh.stem.weight, before)


def _cfg_opt(scale, **extra):
    opts = {"VICTIM.MODEL.ARCH": "fastnet", "VICTIM.OPTIMIZER.NAME": "sgd",
            "VICTIM.OPTIMIZER.ALPHA": "0.05", "VICTIM.OPTIMIZER.MOMENTUM": "0.9",
            "VICTIM.OPTIMIZER.NESTEROV": "True", "VICTIM.OPTIMIZER.GAMMA": "0.01",
            "VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE": str(scale), **extra}
    cfg, _ = build_cfg("", [w for kv in opts.items() for w in kv])
    return cfg


def test_norm_biases_train_at_the_scaled_rate_with_the_decay_per_step_unchanged():
    torch.manual_seed(1)
    model = build_model("fastnet", 10, _SHAPE, layer_dims=_DIMS)
    cfg_opt = _cfg_opt(64.0, **{"VICTIM.OPTIMIZER.MOMENTUM": "0.0",
                                "VICTIM.OPTIMIZER.NESTEROV": "False"}).VICTIM.OPTIMIZER
    groups = classifier_param_groups(model, cfg_opt, NORM_TYPES)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in groups[1]["params"]) == sorted(
        n for n, _ in model.named_parameters() if ".norm" in n and n.endswith("bias"))
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    opt = build_optimizer(groups, cfg_opt, torch.device("cpu"))
    x, y = torch.randn(16, *_SHAPE), torch.randint(0, 10, (16,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    F.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    for n, p in model.named_parameters():
        lr, wd = (0.05 * 64, 0.01 / 64) if ".norm" in n and n.endswith("bias") else (0.05, 0.01)
        want = before[n] - lr * (grads[n] + wd * before[n]) if n in grads else before[n]
        torch.testing.assert_close(p.detach(), want)
    # scale 1: one group, as before the key existed
    assert classifier_param_groups(model, _cfg_opt(1.0).VICTIM.OPTIMIZER, NORM_TYPES) == list(
        model.parameters())


def test_pack_with_airbench_init_and_scaled_biases_equals_one_by_one():
    torch.manual_seed(2)
    x, y = torch.randn(40, *_SHAPE), torch.randint(0, 10, (40,))
    idx = torch.stack([torch.randperm(40)[:16] for _ in range(2)])
    seeds = [31, 32]
    cfg_opt = _cfg_opt(64.0).VICTIM.OPTIMIZER

    def built():
        models = seeded_models(lambda: build_model("fastnet", 10, _SHAPE, layer_dims=_DIMS),
                               seeds)
        return [airbench_init(m, x[idx[j]]) for j, m in enumerate(models)]

    pack = build_pack(built(), x)
    assert isinstance(pack, ChannelPack)
    opt = build_optimizer(classifier_param_groups(pack, cfg_opt, NORM_TYPES), cfg_opt,
                          torch.device("cpu"))
    assert len(opt.param_groups) == 2
    fit(pack, x, y, idx, epochs=2, batch_size=8, optimizer=opt,
        criterion=CRITERIA["classifier"]["ce"], seeds=seeds, desc="test")
    states = pack.member_state_dicts()
    for j, (seed, model) in enumerate(zip(seeds, built())):
        stem = model.stem.weight.detach().clone()
        opt = build_optimizer(classifier_param_groups(model, cfg_opt, NORM_TYPES), cfg_opt,
                              torch.device("cpu"))
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(2):  # fit's shuffles: one permutation per epoch from the seed
            order = idx[j][torch.randperm(16, generator=gen)]
            for s in range(0, 16, 8):
                b = order[s:s + 8]
                loss = F.cross_entropy(model(x[b]).float(), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(states[j][key], value, rtol=1e-7, atol=1e-9)
        assert torch.equal(model.stem.weight, stem)  # frozen through training


def test_config_checks_and_fingerprints():
    cfg = _cfg_opt(64.0, **{"VICTIM.MODEL.INIT": "airbench"})
    assert cfg.SHADOW.MODEL.INIT == "airbench" and cfg.SHADOW.OPTIMIZER.NORM_BIAS_LR_SCALE == 64
    for opts, key in ((["VICTIM.MODEL.INIT", "xavier"], "VICTIM.MODEL.INIT"),
                      (["VICTIM.MODEL.INIT", "airbench"], "VICTIM.MODEL.INIT"),  # simplecnn
                      (["VICTIM.MODEL.ARCH", "fastnet", "SHADOW.MODEL.ARCH", "resnet18",
                        "SHADOW.MODEL.INIT", "airbench"], "SHADOW.MODEL.INIT"),
                      (["VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE", "0.0"],
                       "VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE")):
        with pytest.raises(UsageError, match=key.replace(".", r"\.") + ": bad value"):
            build_cfg("", opts)
    other, _ = build_cfg("", ["VICTIM.MODEL.ARCH", "fastnet", "VICTIM.MODEL.INIT", "airbench",
                              "SHADOW.MODEL.ARCH", "resnet18"])
    assert other.SHADOW.MODEL.INIT == "default"  # another architecture: its own init
    # added while off: absent from the fingerprints of runs made before the keys existed
    plain, _ = build_cfg("", [])
    keys = ("VICTIM.MODEL.INIT", "SHADOW.MODEL.INIT", "VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE",
            "SHADOW.OPTIMIZER.NORM_BIAS_LR_SCALE")
    assert all(k in flatten(plain) for k in keys)
    assert not set(keys) & set(fingerprint(plain, ["VICTIM", "SHADOW"]))
    assert set(keys) <= set(fingerprint(cfg, ["VICTIM", "SHADOW"]))


@pytest.mark.parametrize("init", ["default", "airbench"])
def test_classifier_pack_initialises_each_member_from_its_own_records(init):
    cfg = _cfg_opt(1.0, **{"VICTIM.MODEL.INIT": init,
                           "VICTIM.MODEL.LAYER_DIMS": str(list(_DIMS))})
    torch.manual_seed(3)
    x = torch.randn(50, *_SHAPE)
    train_idx = np.stack([np.arange(0, 20), np.arange(25, 45)])
    seeds = [41, 42]
    pack = build_classifier_pack(cfg.VICTIM, cfg, x, _SHAPE, seeds, torch.device("cpu"),
                                 train_idx=train_idx)
    for j, state in enumerate(pack.member_state_dicts()):
        want = seeded_models(lambda: build_model("fastnet", 10, _SHAPE, layer_dims=_DIMS),
                             [seeds[j]])[0]
        if init == "airbench":
            airbench_init(want, x[train_idx[j]])  # its own records, not the other member's
        for key, value in want.state_dict().items():
            torch.testing.assert_close(state[key], value)
    stems = [p for n, p in pack.named_parameters() if n.endswith((".stem.weight", ".stem.bias"))]
    assert [p.requires_grad for p in stems] == [init == "default", True]  # weight, bias


def test_a_class_sorted_training_set_is_warned_about(monkeypatch, caplog):
    # airbench94 whitens from a model's first training records; stored sorted by class,
    # those are a few classes' only: the run says so, per model, naming the classes left out
    from engine import classifier

    labels = np.repeat(np.arange(4), 10)  # 40 records, class by class
    interleaved = np.arange(40).reshape(4, 10).T.ravel()  # classes 0, 1, 2, 3, 0, ...
    monkeypatch.setattr(classifier, "WHITEN_RECORDS", 10)
    assert classifier.whitening_gaps(labels, [np.arange(40), interleaved]) == [[1, 2, 3], []]
    assert classifier.whitening_gaps(labels, [np.arange(8)]) == [[]]  # all of few records
    cfg = _cfg_opt(1.0, **{"VICTIM.MODEL.INIT": "airbench",
                           "VICTIM.MODEL.LAYER_DIMS": str(list(_DIMS)),
                           "VICTIM.TRAIN.NUM_EPOCHS": "1", "VICTIM.TRAIN.BATCH_SIZE": "20"})
    ctx = SimpleNamespace(cfg=cfg, device=torch.device("cpu"), tsv=NullTsv(),
                          log=logging.getLogger("test_airbench_init"))
    data = SimpleNamespace(all_x=torch.randn(40, *_SHAPE), all_y=torch.as_tensor(labels),
                           input_shape=_SHAPE)
    with caplog.at_level(logging.WARNING, logger="test_airbench_init"):
        classifier.train_classifiers(ctx, data, cfg.VICTIM, [1, 2],
                                     np.stack([np.arange(40), interleaved]), ["sorted", "mixed"])
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and warned[0].startswith("sorted: MODEL.INIT airbench whitens "
                                                     "from its first 10 training records")
    assert "[1, 2, 3]" in warned[0]
