"""The fused CPU kernel (gather + convolution + 2x2 max-pool) against PyTorch's ops, and a
pack that uses it against one that does not."""

import logging
import os

import pytest
import torch
import torch.nn.functional as F

import engine.fused as fused
from engine.optim import CRITERIA
from engine.pack import ModelPack
from engine.trainer import fit, predict, seeded_models
from victims import MODELS


def _load_kernel():
    """(the compiled kernel or None, the warnings logged while loading it)."""
    messages, handler = [], logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    log = logging.getLogger("mia")
    log.addHandler(handler)
    try:
        return fused.load_kernel(), messages
    finally:
        log.removeHandler(handler)


kernel, _load_warnings = _load_kernel()


@pytest.fixture
def built_kernel():
    """The compiled kernel; skipped where it cannot be built, except in CI where it must."""
    if kernel is None:
        why = "; ".join(_load_warnings) or "see the warning engine.fused logged"
        if os.environ.get("CI"):
            pytest.fail(f"CI must build the fused CPU kernel: {why}")
        pytest.skip(f"fused CPU kernel not built: {why}")
    return kernel


needs_kernel = pytest.mark.usefixtures("built_kernel")


def _reference(x, idx, w, b):
    """PyTorch's ops: member j's conv + 2x2 max-pool on x[idx[j]]."""
    k = idx.shape[0]
    return F.max_pool2d(F.conv2d(x[idx.t().contiguous()].flatten(1, 2), w, b, groups=k), 2)


def _both(x, idx, w, b, grad):
    """(output, weight grad, bias grad) of the kernel and of PyTorch's ops."""
    out = []
    for run in (lambda x, i, w, b: fused.conv_pool(x, i, i.shape[0], w, b, kernel), _reference):
        wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
        y = run(x, idx, wr, br)
        y.backward(grad)
        out.append((y.detach(), wr.grad, br.grad))
    return out


@needs_kernel
@pytest.mark.parametrize("k, c, oc, side, ks", [
    (3, 3, 6, 32, 5),   # simplecnn / pytorchcnn on CIFAR-10, three members
    (1, 1, 6, 28, 5),   # one member on MNIST-shaped data
    (2, 3, 7, 31, 5),   # odd output side (floor pooling), channel blocks of 6 + 1
    (2, 2, 4, 20, 3),   # blocks of 2, a 3x3 kernel
    (1, 3, 5, 64, 5),   # rows of 60 columns: 4 vectors
    (2, 3, 16, 32, 5),  # 16 output channels: vectors across channels
])
def test_kernel_equals_pytorch_ops(k, c, oc, side, ks):
    torch.manual_seed(0)
    x = torch.randn(40, c, side, side)
    idx = torch.stack([torch.randperm(40)[:9] for _ in range(k)])
    w, b = torch.randn(k * oc, c, ks, ks) * 0.2, torch.randn(k * oc) * 0.1
    pooled = (side - ks + 1) // 2
    grad = torch.randn(9, k * oc, pooled, pooled)
    (y, gw, gb), (y_ref, gw_ref, gb_ref) = _both(x, idx, w, b, grad)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gb, gb_ref, rtol=1e-4, atol=1e-4)


@needs_kernel
@pytest.mark.parametrize("k, c, oc, side, ks", [
    (3, 6, 16, 14, 5),  # simplecnn's second stage, three members
    (2, 4, 7, 21, 3),   # odd sides, channel blocks of 6 + 1 (output) and 2 + 2 (input)
    (1, 5, 2, 32, 5),   # rows of 32 columns: two vectors per input row
    (2, 3, 32, 13, 3),  # 2 x 16 channels across vectors, 3x3 kernel, odd side
    (1, 2, 16, 47, 5),  # 16 channels, pooled rows of 21 in blocks of 5 + 5 + 5 + 5 + 1
])
def test_kernel_on_activations_equals_pytorch_ops(k, c, oc, side, ks):
    # a later stage: member j reads channels j*c .. j*c+c-1 and gets their gradient back
    torch.manual_seed(1)
    x = torch.randn(7, k * c, side, side)
    w, b = torch.randn(k * oc, c, ks, ks) * 0.2, torch.randn(k * oc) * 0.1
    pooled = (side - ks + 1) // 2
    grad = torch.randn(7, k * oc, pooled, pooled)
    results = []
    for run in (lambda *a: fused.conv_pool(*a, kernel=kernel),
                lambda xr, _, k, wr, br: F.max_pool2d(F.conv2d(xr, wr, br, groups=k), 2)):
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
        y = run(xr, None, k, wr, br)
        y.backward(grad)
        results.append((y.detach(), xr.grad, wr.grad, br.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_ties_and_nan_follow_max_pool2d():
    # flat images make all four values of a window equal: the gradient goes to the first
    # (as max_pool2d's); a NaN in a window wins the window
    x = torch.ones(4, 3, 32, 32)
    x[1, :, :16] = -1.0
    x[2, 0, 7, 9] = float("nan")
    idx = torch.tensor([[0, 1, 2], [3, 2, 1]])
    w, b = torch.randn(12, 3, 5, 5), torch.randn(12)
    grad = torch.randn(3, 12, 14, 14)
    (y, gw, gb), (y_ref, gw_ref, gb_ref) = _both(x, idx, w, b, grad)
    assert torch.equal(torch.isnan(y), torch.isnan(y_ref)) and torch.isnan(y).any()
    _, arg = kernel.forward(x, idx, 2, w, b)
    conv = F.conv2d(x[idx.t().contiguous()].flatten(1, 2), w, b, groups=2)
    _, where = F.max_pool2d(conv, 2, return_indices=True)  # flat index in the 28 x 28 map
    assert torch.equal(arg.long(), where // 28 % 2 * 2 + where % 2)  # window 0 1 / 2 3
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    x[2, 0, 7, 9] = 1.0  # without the NaN (it poisons the gradient), ties alone
    (y, gw, gb), (y_ref, gw_ref, gb_ref) = _both(x, idx, w, b, grad)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gb, gb_ref, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_kernel_rejects_bad_input():
    x, idx = torch.randn(5, 3, 32, 32), torch.tensor([[0, 7]])
    with pytest.raises(RuntimeError, match="out of range"):
        kernel.forward(x, idx, 1, torch.randn(6, 3, 5, 5), torch.randn(6))
    with pytest.raises(RuntimeError, match="weight"):
        kernel.forward(x, idx[:, :1], 1, torch.randn(6, 4, 5, 5), torch.randn(6))


@needs_kernel
@pytest.mark.parametrize("arch", ["simplecnn", "pytorchcnn"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_pack_trains_like_the_plain_pack(arch, threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y = torch.randn(200, 3, 32, 32), torch.randint(0, 10, (200,))
    seeds = [3, 4, 5][: 1 if threads == 2 else 3]  # a pack of one slices its batch
    idx = torch.stack([torch.randperm(200)[:96] for _ in seeds])
    states, outs = [], []
    for use in (True, False):
        pack = ModelPack(seeded_models(MODELS[arch], seeds), fused=use)
        assert pack.fused_first == use
        fit(pack, x, y, idx, epochs=2, batch_size=32,
            optimizer=torch.optim.Adam(pack.parameters(), 1e-3),
            criterion=CRITERIA["classifier"]["ce"], seeds=seeds, desc="t")
        states.append(pack.member_state_dicts())
        outs.append(predict(pack, x, idx, batch_size=64))
    torch.set_num_threads(old)
    for a, b in zip(*states):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=2e-4)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-3)
    # the members' weights load into the plain architecture and give the same outputs
    model = MODELS[arch]()
    model.load_state_dict(states[0][0])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x[idx[0]]), outs[0][0], rtol=1e-4, atol=1e-4)


def test_not_fused_where_the_architecture_has_no_conv_pool():
    assert not ModelPack(seeded_models(MODELS["simplemlp"], [1]), fused=True).fused_first


def test_falls_back_to_pytorch_ops_with_one_warning(monkeypatch, mia_warnings):
    def broken(*a, **k):
        raise RuntimeError("Error building extension 'x': c++: command not found")

    monkeypatch.setattr(fused, "_state", {})
    monkeypatch.setattr("torch.utils.cpp_extension.load", broken)
    packs = [ModelPack(seeded_models(MODELS["simplecnn"], [1]), fused=True) for _ in range(2)]
    assert not any(p.fused_first for p in packs)
    warnings = [m for m in mia_warnings if "fused CPU kernel unavailable" in m]
    assert len(warnings) == 1 and "command not found" in warnings[0]
    x = torch.randn(10, 3, 32, 32)
    assert predict(packs[0], x, torch.arange(4)[None], batch_size=4).shape == (1, 4, 10)
