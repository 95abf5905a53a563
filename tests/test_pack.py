"""A pack of K models equals K models trained one by one (float64, so rounding is tiny)."""

import copy

import pytest
import torch

from attack_models import FCNet
from engine.optim import CRITERIA
from engine.pack import ModelPack, can_pack
from engine.trainer import fit, predict, seeded_models
from victims import MODELS, build_model, check_model

# Architectures that take feature vectors (Purchase-100-like records of 20 features).
_VECTOR_ARCHS = [a for a in sorted(MODELS) if not check_model(a, (20,))]


_ARCH_SHAPES = [(a, (3, 32, 32)) for a in sorted(MODELS)] + [(a, (20,)) for a in _VECTOR_ARCHS]
_ARCH_IDS = [f"{a}-{'image' if len(s) == 3 else 'vector'}" for a, s in _ARCH_SHAPES]


def _builder(arch, shape=(3, 32, 32)):
    return lambda: build_model(arch, 10, shape)


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _opt(params, name):
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3, weight_decay=5e-4)
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _train(models, x, y, idx, seeds, criterion, opt, channels_last):
    pack = ModelPack(models, channels_last=channels_last)
    fit(pack, x, y, idx, epochs=2, batch_size=16, optimizer=_opt(pack.parameters(), opt),
        criterion=criterion, seeds=seeds, desc="test")
    return pack


@pytest.mark.parametrize("arch,shape", _ARCH_SHAPES, ids=_ARCH_IDS)
@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_pack_training_equals_one_by_one(arch, shape, opt):
    torch.manual_seed(0)
    x, y = torch.randn(120, *shape), torch.randint(0, 10, (120,))
    idx = torch.stack([torch.randperm(120)[:40] for _ in range(3)])
    seeds = [11, 12, 13]
    build = _builder(arch, shape)
    crit = CRITERIA["classifier"]["ce"]
    pack = _train(seeded_models(build, seeds), x, y, idx, seeds, crit, opt, channels_last=True)
    for j, seed in enumerate(seeds):
        alone = _train(seeded_models(build, [seed]), x, y, idx[j:j + 1], [seed], crit, opt,
                       channels_last=False)
        a, b = pack.member_state_dicts()[j], alone.member_state_dicts()[0]
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-7, atol=1e-9)
    # and the members really differ from each other (their own seeds and records)
    sd = pack.member_state_dicts()
    assert not torch.allclose(sd[0][next(iter(sd[0]))], sd[1][next(iter(sd[1]))])


def test_attack_pack_with_batchnorm_equals_one_by_one():
    torch.manual_seed(0)
    x, y = torch.rand(300, 10), torch.randint(0, 2, (300,))
    idx = torch.arange(300).view(3, 100)
    seeds = [1, 2, 3]
    crit = CRITERIA["attack"]["bce"]
    pack = _train(seeded_models(FCNet, seeds), x, y, idx, seeds, crit, "adam", True)
    out = predict(pack, x, idx, batch_size=64)
    for j, seed in enumerate(seeds):
        model = FCNet()
        model.load_state_dict(pack.member_state_dicts()[j])
        alone = _train(seeded_models(FCNet, [seed]), x, y, idx[j:j + 1], [seed], crit, "adam",
                       True)
        for key, value in alone.member_state_dicts()[0].items():
            torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-7, atol=1e-9)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x[idx[j]]), out[j].to(torch.float64),
                                       rtol=1e-5, atol=1e-6)


def test_unpackable_model_is_refused():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert not can_pack(net)
    with pytest.raises(Exception, match="MODELS_PER_PACK"):
        ModelPack([copy.deepcopy(net)])


@pytest.mark.parametrize("arch,shape", _ARCH_SHAPES, ids=_ARCH_IDS)
def test_pack_outputs_equal_each_members_own_forward(arch, shape):
    # the pack gathers each member's records straight into its grouped layout
    torch.manual_seed(0)
    x = torch.randn(50, *shape)
    idx = torch.stack([torch.randperm(50)[:20] for _ in range(3)])
    models = seeded_models(_builder(arch, shape), [1, 2, 3])
    out = predict(ModelPack(copy.deepcopy(models)), x, idx, batch_size=8)
    for j, model in enumerate(models):
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x[idx[j]]), out[j].to(torch.float64),
                                       rtol=1e-5, atol=1e-6)


def test_bf16_autocast_trains_float32_weights_on_cpu():
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    x, y = torch.randn(96, 3, 32, 32), torch.randint(0, 10, (96,))
    idx = torch.stack([torch.randperm(96)[:64] for _ in range(2)])
    seeds = [5, 6]
    packs = {}
    for amp in (False, True):
        pack = ModelPack(seeded_models(_builder("simplecnn"), seeds))
        losses = []
        fit(pack, x, y, idx, epochs=6, batch_size=16, optimizer=_opt(pack.parameters(), "adam"),
            criterion=CRITERIA["classifier"]["ce"], seeds=seeds, desc="amp", amp=amp,
            on_epoch=lambda e, loss, out=losses: out.append(loss))
        packs[amp] = pack
        assert all(p.dtype == torch.float32 for p in pack.parameters())
        assert (losses[-1] < losses[0]).all()  # it learns under bf16 too
    a, b = (packs[amp].member_state_dicts()[0]["features.0.weight"] for amp in (False, True))
    assert not torch.equal(a, b)  # bf16 really was used: not bit-equal to float32 ...
    torch.testing.assert_close(a, b, rtol=0, atol=0.05)  # ... but the same training


def test_batchnorm_pack_trains_through_a_last_batch_of_one():
    # 64 * 2 + 1 records: the last batch holds one record, which normalises to zero
    torch.manual_seed(0)
    x, y = torch.rand(2 * 129, 10), torch.randint(0, 2, (2 * 129,))
    pack = ModelPack(seeded_models(FCNet, [1, 2]))
    norm = pack.layers[1]
    out = norm(torch.rand(2, 64, 1))  # (K, F, B): one record per member
    torch.testing.assert_close(out, norm.bias.view(2, 64, 1))
    fit(pack, x, y, torch.arange(len(y)).view(2, -1), epochs=2, batch_size=64,
        optimizer=_opt(pack.parameters(), "adam"), criterion=CRITERIA["attack"]["bce"],
        seeds=[1, 2], desc="test")
    assert all(torch.isfinite(p).all() for p in pack.parameters())
    assert all(torch.isfinite(b).all() for b in pack.buffers())


def test_seeded_models_built_in_threads_at_once_equal_those_built_alone():
    # shadow packs are built in worker threads side by side; torch's CPU generator is one
    # per process, so without a lock one thread's draws interleave with the other's seeding
    import threading
    import time

    def build():
        first = torch.rand(3)
        time.sleep(0.02)  # the other thread seeds here
        return torch.cat([first, torch.rand(3)])

    alone = seeded_models(build, [1, 2, 3, 4])
    built = {}

    def worker(w):
        built[w] = seeded_models(build, [2 * w + 1, 2 * w + 2])

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(built[0] + built[1], alone):
        assert torch.equal(got, want)
