"""DP-SGD through Opacus (engine/dp.py): the clipped update against a per-record loop, the
accountant's epsilon against Opacus's RDP analysis, and a DP victim whose every epsilon
lower bound stays below what it spent."""

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from configs.config import build_cfg
from conftest import REPO, tiny_opts
from engine.dp import PrivateTraining, noise_multiplier
from utils.errors import UsageError
from victims import build_model


def _dp(**kw):
    return SimpleNamespace(**{"NOISE_MULTIPLIER": 0.0, "TARGET_EPSILON": 0.0,
                              "MAX_GRAD_NORM": 0.05, "DELTA": 1e-5, **kw})


def test_a_private_step_is_the_mean_of_clipped_per_record_gradients():
    torch.manual_seed(0)
    model = build_model("simplemlp", 3, (6,), [5])
    ref = build_model("simplemlp", 3, (6,), [5])
    ref.load_state_dict(model.state_dict())
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    private = PrivateTraining(model, torch.optim.SGD(model.parameters(), lr=1.0), _dp(),
                              num_records=70, batch_size=10, epochs=1, seed=0)
    loss = F.cross_entropy(private.module(x), y)  # mean over the 7 records drawn
    private.optimizer.zero_grad()
    loss.backward()
    private.optimizer.step()
    clipped = []
    for i in range(len(x)):  # each record's gradient, clipped to MAX_GRAD_NORM
        grads = torch.autograd.grad(F.cross_entropy(ref(x[i:i + 1]), y[i:i + 1]),
                                    list(ref.parameters()))
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        assert norm > 0.05  # the clipping bites
        clipped.append([g * min(1.0, 0.05 / norm.item()) for g in grads])
    with torch.no_grad():  # SGD lr 1 on their sum over the expected batch size (10)
        for p, *gs in zip(ref.parameters(), *clipped):
            p -= sum(gs) / 10
    model, spent = private.release()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert spent["steps"] == 1 and spent["noise_multiplier"] == 0.0


def test_target_epsilon_noise_spends_at_most_the_target():
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    sigma = noise_multiplier(_dp(TARGET_EPSILON=1.0), 500, 64, 15)
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    steps = 15 * math.ceil(500 / 64)
    eps, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=64 / 500, noise_multiplier=sigma,
                                                              steps=steps, orders=orders),
                               delta=1e-5)
    assert 0.9 < eps <= 1.0


def test_dp_victim_records_the_accountants_epsilon_and_bounds_stay_below(data_root, tmp_path):
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    out = tmp_path / "run"
    opts = tiny_opts(data_root, out, **{
        "VICTIM.TRAIN.NUM_EPOCHS": "4", "SHADOW.NUM_MODELS": "2", "NUM_THREADS": "1",
        "NUM_WORKERS": "1", "FUSED_CPU_KERNEL": "False", "VICTIM.DP.TARGET_EPSILON": "1.0",
        "VICTIM.OPTIMIZER.NAME": "sgd", "VICTIM.OPTIMIZER.ALPHA": "0.5",
        "ATTACKER.METHODS": "[shokri,loss,confidence,correctness]",
        "ATTACKER.TEST.BOOTSTRAP": "10"})
    done = subprocess.run([sys.executable, os.path.join(REPO, "run_attack.py"), *opts],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    victim, dp = metrics["victim"], metrics["victim"]["dp"]
    assert dp["steps"] == 4 * math.ceil(500 / 64) and dp["sample_rate"] == 64 / 500
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))
    want, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(
        q=dp["sample_rate"], noise_multiplier=dp["noise_multiplier"], steps=dp["steps"],
        orders=orders), delta=1e-5)
    assert victim["epsilon"] == pytest.approx(want, rel=1e-9) and want <= 1.0
    assert all(s["epsilon"] == pytest.approx(want) for s in metrics["shadows"])  # as victim
    for name, m in metrics["methods"].items():
        assert m["overall"]["epsilon_lower_bound"] <= victim["epsilon"], name
    assert "trained with DP-SGD: ε = " in (out / "report.md").read_text()
    assert "one by one" in (out / "run.log").read_text()


def test_poisson_batches_take_each_record_independently_at_the_sample_rate():
    from engine.trainer import _poisson_batch

    train_idx = (torch.arange(1000) * 3)[None]
    gen = torch.Generator().manual_seed(0)
    draws = [_poisson_batch(train_idx, gen, 64) for _ in range(2000)]
    sizes = torch.tensor([d.shape[1] for d in draws], dtype=torch.float64)
    assert abs(sizes.mean().item() - 64) < 0.5 and sizes.std().item() > 5  # not fixed-size
    counts = torch.bincount(torch.cat([d[0] for d in draws]) // 3, minlength=1000)
    assert (torch.cat([d[0] for d in draws]) % 3 == 0).all()  # only the member's records
    assert counts.min() > 0.064 * 2000 - 5 * 11 and counts.max() < 0.064 * 2000 + 5 * 11
    again = _poisson_batch(train_idx, torch.Generator().manual_seed(0), 64)
    assert torch.equal(again, draws[0])  # from the member's own generator


@pytest.mark.parametrize("key, value", [("VICTIM.TRAIN.AUGMENT", "flip"),
                                        ("VICTIM.OPTIMIZER.SCHEDULER", "cosine"),
                                        ("SHADOW.TRAIN.LABEL_SMOOTHING", "0.1"),
                                        ("VICTIM.TRAIN.MIXUP_ALPHA", "0.2"),
                                        ("VICTIM.MODEL.INIT", "airbench"),
                                        ("SHADOW.MODEL.INIT", "airbench"),
                                        ("VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE", "64.0")])
def test_dp_sgd_refuses_recipe_parts_it_would_ignore(key, value):
    arch = [key.replace("INIT", "ARCH"), "fastnet"] if key.endswith("INIT") else []
    with pytest.raises(UsageError, match=f"{key}: bad value .*with VICTIM.DP"):
        build_cfg("", ["VICTIM.DP.NOISE_MULTIPLIER", "1.0", *arch, key, value])
