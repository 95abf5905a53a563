"""A pack of K models equals K models trained one by one (float64, so rounding is tiny)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engine.pack
from attack_models import ATTACK_MODELS, FCNet
from engine.optim import CRITERIA
from engine.pack import ChannelPack, ModelList, ModelPack, build_pack, can_pack
from engine.trainer import fit, predict, seeded_models
from victims import MODELS, build_model, check_model

# Architectures that take feature vectors (Purchase-100-like records of 20 features).
_VECTOR_ARCHS = [a for a in sorted(MODELS) if not check_model(a, (20,))]
# The deep networks at tiny widths on tiny images, so that float64 training takes
# seconds; their structure (blocks, skip connections, batch norms) is the full one.
_TINY = {"resnet18": dict(layer_dims=(4, 4, 8, 8)), "wrn": dict(depth=10, width=1),
         "fastnet": dict(layer_dims=(4, 8, 8))}
_TINY_SHAPE = {"resnet18": (3, 8, 8), "wrn": (3, 8, 8), "fastnet": (3, 12, 12)}


def _image_shape(arch):
    return _TINY_SHAPE.get(arch, (3, 32, 32))


_ARCH_SHAPES = ([(a, _image_shape(a)) for a in sorted(MODELS)]
                + [(a, (20,)) for a in _VECTOR_ARCHS])
_ARCH_IDS = [f"{a}-{'image' if len(s) == 3 else 'vector'}" for a, s in _ARCH_SHAPES]


def _builder(arch, shape=(3, 32, 32)):
    return lambda: build_model(arch, 10, shape, **_TINY.get(arch, {}))

# One float32 unit in the last place, relative: predict returns float32 outputs, which
# round the float64 ones by up to half of it (5.8e-8 measured).
_F32 = 2.0 ** -23


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True)
def fresh_verdicts(monkeypatch):
    """build_pack's verdicts as in a new process (they are cached per architecture)."""
    monkeypatch.setattr(engine.pack, "_VERDICTS", {})


def _opt(params, name):
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3, weight_decay=5e-4)
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _train(models, x, y, idx, seeds, criterion, opt, channels_last):
    pack = build_pack(models, x, channels_last=channels_last)
    assert isinstance(pack, (ModelPack, ChannelPack))
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
                                       rtol=_F32, atol=1e-12)


def test_model_with_an_ungrouped_layer_is_refused_by_packs_and_trains_one_by_one(mia_warnings):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(6))
    assert not can_pack(net)
    for form in (ModelPack, ChannelPack):
        with pytest.raises(Exception, match="LayerNorm"):
            form([copy.deepcopy(net)])
    assert isinstance(build_pack([net], torch.randn(4, 3, 8, 8)), ModelList)
    assert mia_warnings == ["Sequential does not train in packs (layers with no grouped form: "
                            "LayerNorm); its models train one by one"]


def test_batchnorm2d_sequence_packs_by_channels():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 10))
    assert not can_pack(net)  # no ModelPack: BatchNorm2d has no leaf-sequence form ...
    assert isinstance(build_pack(seeded_models(lambda: copy.deepcopy(net), [1, 2]),
                                 torch.randn(4, 3, 8, 8)), ChannelPack)  # ... but stacks


# Modules made of layers that packs have, whose forward is not their leaves in
# registration order (which is what a pack runs): each was packed into another network.
class _FunctionalRelu(nn.Module):
    """The ReLU is F.relu in forward, no module."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool = nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)
        self.flat, self.fc = nn.Flatten(), nn.Linear(4 * 3 * 3, 10)

    def forward(self, x):
        return self.fc(self.flat(self.pool(F.relu(self.conv(x)))))


class _LayerTwice(nn.Module):
    """One hidden layer (and its tanh) applied twice."""

    def __init__(self):
        super().__init__()
        self.flat, self.fc, self.act = nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Tanh()
        self.hidden, self.out = nn.Linear(16, 16), nn.Linear(16, 10)

    def forward(self, x):
        h = self.act(self.fc(self.flat(x)))
        return self.out(self.act(self.hidden(self.act(self.hidden(h)))))


class _Skip(_LayerTwice):
    """The same layers, with a residual connection around the hidden layer instead."""

    def forward(self, x):
        h = self.act(self.fc(self.flat(x)))
        return self.out(h + self.act(self.hidden(h)))


class _TrainOnlyTemperature(nn.Module):
    """Its leaves in order, but logits divided by 2 in train mode only (eval outputs agree)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Tanh(),
                                 nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x) / (2.0 if self.training else 1.0)


class _TiedWeights(nn.Module):
    """Its leaves in order, but two layers share one weight (the same outputs; a pack
    would give each its own copy and train them apart)."""

    def __init__(self):
        super().__init__()
        self.flat, self.fc = nn.Flatten(), nn.Linear(3 * 8 * 8, 16)
        self.a, self.act, self.b = nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16)
        self.b.weight = self.a.weight
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(self.b(self.act(self.a(self.fc(self.flat(x))))))


class _ChannelMixing(nn.Module):
    """Layers that packs have, but a forward that reverses the order of the channels
    (in a pack of stacked channels, it would hand one member's channels to another)."""

    def __init__(self):
        super().__init__()
        self.conv, self.flat, self.fc = nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(self.flat(self.conv(x).flip(1)))


class _ConvWithoutBias(nn.Module):
    """Layers that packs have, but a convolution without bias (no ModelPack of it)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.Flatten(),
                                 nn.Linear(4 * 6 * 6, 10))

    def forward(self, x):
        return self.net(x)


def _train_alone(model, x, y, rows, seed, epochs, batch_size):
    """Plain PyTorch training of one model on x[rows], with fit's shuffles (a generator
    seeded with `seed`, one permutation per epoch), its float32 loss and _opt's Adam."""
    gen = torch.Generator().manual_seed(seed)
    opt = _opt(model.parameters(), "adam")
    model.train()
    for _ in range(epochs):
        order = rows[torch.randperm(len(rows), generator=gen)]
        for s in range(0, len(rows), batch_size):
            b = order[s:s + batch_size]
            loss = F.cross_entropy(model(x[b]).float(), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


@pytest.mark.parametrize("arch,form", [
    (_FunctionalRelu, ChannelPack), (_LayerTwice, ChannelPack), (_Skip, ChannelPack),
    (_TrainOnlyTemperature, ChannelPack), (_ConvWithoutBias, ChannelPack),
    (_TiedWeights, ModelList), (_ChannelMixing, ModelList)], ids=lambda a: a.__name__)
def test_model_whose_forward_is_not_its_leaves_packs_by_channels_or_trains_one_by_one(
        arch, form, mia_warnings):
    torch.manual_seed(0)
    x, y = torch.randn(60, 3, 8, 8), torch.randint(0, 10, (60,))
    idx = torch.stack([torch.randperm(60)[:24] for _ in range(3)])
    seeds = [11, 12, 13]
    pack = build_pack(seeded_models(arch, seeds), x)
    build_pack(seeded_models(arch, seeds), x)  # the verdict is kept: no second probe, no line
    assert type(pack) is form
    if form is ModelList:
        assert len(mia_warnings) == 1
        assert mia_warnings[0].startswith(f"{arch.__name__} does not train in packs (")
        assert mia_warnings[0].endswith("); its models train one by one")
    else:  # its own forward runs on stacked channels: no fallback, no line
        assert not mia_warnings
    fit(pack, x, y, idx, epochs=2, batch_size=8, optimizer=_opt(pack.parameters(), "adam"),
        criterion=CRITERIA["classifier"]["ce"], seeds=seeds, desc="test")
    out = predict(pack, x, idx, batch_size=16)
    for j, seed in enumerate(seeds):
        alone = _train_alone(seeded_models(arch, [seed])[0], x, y, idx[j], seed, 2, 8)
        got = pack.member_state_dicts()[j]
        for key, value in alone.state_dict().items():
            torch.testing.assert_close(got[key], value, rtol=1e-7, atol=1e-9)
        with torch.no_grad():
            torch.testing.assert_close(out[j].double(), alone.eval()(x[idx[j]]),
                                       rtol=_F32, atol=1e-12)


@pytest.mark.parametrize("name,build,shape,form", [
    *((a, _builder(a, _image_shape(a)), _image_shape(a),
       ChannelPack if a in _TINY else ModelPack) for a in sorted(MODELS)),
    *((a, ATTACK_MODELS[a], (10,), ModelPack) for a in sorted(ATTACK_MODELS))])
def test_registered_architectures_pass_the_probe_and_pack(name, build, shape, form,
                                                           mia_warnings):
    pack = build_pack(seeded_models(build, [1, 2]), torch.randn(20, *shape), name=name)
    assert type(pack) is form
    assert engine.pack._VERDICTS
    assert all(v == (form, "") for v in engine.pack._VERDICTS.values())
    assert not mia_warnings


def test_probe_leaves_the_random_generator_as_it_was():
    # a run with the verdict cached must draw the same numbers as one without
    models, x = seeded_models(_ChannelMixing, [1]), torch.randn(8, 3, 8, 8)
    state = torch.get_rng_state()
    assert isinstance(build_pack(models, x), ModelList)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("arch,shape", _ARCH_SHAPES, ids=_ARCH_IDS)
def test_pack_outputs_equal_each_members_own_forward(arch, shape):
    # the pack gathers each member's records straight into its grouped layout
    torch.manual_seed(0)
    x = torch.randn(50, *shape)
    idx = torch.stack([torch.randperm(50)[:20] for _ in range(3)])
    models = seeded_models(_builder(arch, shape), [1, 2, 3])
    out = predict(build_pack(copy.deepcopy(models), x), x, idx, batch_size=8)
    for j, model in enumerate(models):
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x[idx[j]]), out[j].to(torch.float64),
                                       rtol=_F32, atol=1e-12)


def test_bf16_autocast_trains_float32_weights_on_cpu():
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    x, y = torch.randn(96, 3, 32, 32), torch.randint(0, 10, (96,))
    idx = torch.stack([torch.randperm(96)[:64] for _ in range(2)])
    seeds = [5, 6]
    packs = {}
    init = ModelPack(seeded_models(MODELS["simplecnn"], seeds)).member_state_dicts()[0]
    for amp in (False, True):
        pack = ModelPack(seeded_models(_builder("simplecnn"), seeds))
        losses = []
        fit(pack, x, y, idx, epochs=6, batch_size=16, optimizer=_opt(pack.parameters(), "adam"),
            criterion=CRITERIA["classifier"]["ce"], seeds=seeds, desc="amp", amp=amp,
            on_epoch=lambda e, loss, out=losses: out.append(loss))
        packs[amp] = pack
        assert all(p.dtype == torch.float32 for p in pack.parameters())
        assert (losses[-1] < losses[0]).all()  # it learns under bf16 too
    a, b, start = (torch.cat([t.flatten() for t in sd.values()]) for sd in
                   (packs[False].member_state_dicts()[0], packs[True].member_state_dicts()[0], init))
    assert not torch.equal(a, b)  # bf16 really was used: not bit-equal to float32 ...
    # ... but the same training: the weights differ by 3.3% of how far float32 training
    # moved them (measured here; 14.6% in the first convolution alone), where training
    # with twice the learning rate differs by 92% (and an absolute 0.024 at most, so an
    # absolute tolerance of 0.05 would pass it, or no training at all)
    assert (a - b).norm() < 0.1 * (a - start).norm()


def test_batchnorm_pack_trains_through_a_last_batch_of_one():
    # 64 * 2 + 1 records: the last batch holds one record, which normalises to zero
    torch.manual_seed(0)
    x, y = torch.rand(2 * 129, 10), torch.randint(0, 2, (2 * 129,))
    pack = ModelPack(seeded_models(FCNet, [1, 2]))
    norm = pack.layers[2]  # after the input scaling (Identity) and the first Linear
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


@pytest.mark.parametrize("arch", sorted(_TINY))
def test_deep_network_pack_equals_plain_training_and_round_trips(arch):
    # batch norms over K*C channels and grouped convolutions, under the model's own
    # forward (skip connections): each member trains as plain PyTorch trains it alone
    torch.manual_seed(0)
    shape = _image_shape(arch)
    x, y = torch.randn(48, *shape), torch.randint(0, 10, (48,))
    idx = torch.stack([torch.randperm(48)[:20] for _ in range(2)])
    seeds = [21, 22]
    pack = build_pack(seeded_models(_builder(arch, shape), seeds), x)
    assert isinstance(pack, ChannelPack)
    fit(pack, x, y, idx, epochs=2, batch_size=8, optimizer=_opt(pack.parameters(), "adam"),
        criterion=CRITERIA["classifier"]["ce"], seeds=seeds, desc="test")
    out = predict(pack, x, idx, batch_size=16)
    states = pack.member_state_dicts()
    for j, seed in enumerate(seeds):
        alone = _train_alone(seeded_models(_builder(arch, shape), [seed])[0], x, y, idx[j],
                             seed, 2, 8)
        assert states[j].keys() == alone.state_dict().keys()
        for key, value in alone.state_dict().items():
            torch.testing.assert_close(states[j][key], value, rtol=1e-7, atol=1e-9)
        model = _builder(arch, shape)()  # the member's weights load into its architecture
        model.load_state_dict(states[j])
        with torch.no_grad():
            torch.testing.assert_close(out[j].double(), model.eval()(x[idx[j]]),
                                       rtol=_F32, atol=1e-12)
    assert not torch.equal(states[0]["fc.weight"], states[1]["fc.weight"])
