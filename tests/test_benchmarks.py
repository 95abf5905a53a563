"""The benchmarks run end to end on CPU (a few records) and print figures that add up, so
a device session is not spent finding a broken script, and a README figure is what it
says."""

import math
import re
import subprocess

import pytest
import torch

from benchmarks import bench_gpu_fleet, bench_modern
from benchmarks.bench_speed import run_with_peak

_BOOL = r"(True|False)"
_PROBE = re.compile(rf"probe: (\d+) per pack, bf16 autocast {_BOOL}, channels_last {_BOOL}, "
                    rf"CUDA graphs {_BOOL}: ([\d,]+) img/s, ([\d.]+) ms per step")
_FLEET = re.compile(rf"fleet: (\d+) shadows x (\d+) records x (\d+) epochs \((\d+) per pack, "
                    rf"bf16 {_BOOL}, channels_last {_BOOL}, CUDA graphs {_BOOL}, "
                    rf"cudnn.benchmark True\): ([\d.]+) s, ([\d,]+) img/s, ([\d.]+) s for "
                    rf"(\d+) epochs")


def _number(text):
    value = float(text.replace(",", ""))
    assert math.isfinite(value) and value > 0, text
    return value


def _same_time(seconds, seconds_step, images, rate):
    """seconds (printed to seconds_step) and rate (printed to whole img/s) of the same
    images come from one time measurement, up to their rounding."""
    low = images / (rate + 0.5) - seconds_step / 2
    high = images / (rate - 0.5) + seconds_step / 2
    return low * (1 - 1e-9) <= seconds <= high * (1 + 1e-9)


def test_gpu_fleet_benchmark_smoke_run_on_cpu(capsys):
    shadows, records, per_pack, epochs, batch = 3, 80, 2, 2, 32  # a partial pack and batch
    bench_gpu_fleet.main(["--device", "cpu", "--shadows", str(shadows), "--records",
                          str(records), "--packs", str(per_pack), "--probe-epochs", "1",
                          "--epochs", str(epochs), "--batch", str(batch)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cpu ")
    probes = [_PROBE.fullmatch(line) for line in out if line.startswith("probe:")]
    assert all(probes)
    settings = [(int(m[1]), m[2], m[3], m[4]) for m in probes]
    # on CPU: no CUDA graphs; fp32 channels_last, then bf16, then without channels_last
    assert settings == [(per_pack, "False", "True", "False"), (per_pack, "True", "True", "False"),
                        (per_pack, "False", "False", "False")]
    steps = math.ceil(shadows / per_pack) * math.ceil(records / batch)  # one probe epoch
    rates = []
    for m in probes:
        rate, ms = _number(m[5]), _number(m[6])
        # both figures come from the same seconds: images / rate = steps x ms per step
        assert _same_time(steps * ms / 1000, steps * 0.01 / 1000, shadows * records, rate)
        rates.append(rate)
    fleet = [_FLEET.fullmatch(line) for line in out if line.startswith("fleet:")]
    assert len(fleet) == 1 and fleet[0]
    f = fleet[0]
    assert (int(f[1]), int(f[2]), int(f[3]), int(f[11])) == (shadows, records, epochs, epochs)
    # the fleet trains with the fastest probe's setting
    best = [s for s, r in zip(settings, rates) if r == max(rates)]
    assert (int(f[4]), f[5], f[6], f[7]) in best
    seconds, rate, scaled = _number(f[8]), _number(f[9]), _number(f[10])
    assert _same_time(seconds, 0.1, shadows * records * epochs, rate)
    assert scaled == seconds  # every epoch measured, nothing scaled


def test_run_peak_is_the_runs_own(tmp_path):
    # ru_maxrss would report more than 0.5 GiB for the small script: the larger, earlier
    # child (RUSAGE_CHILDREN), or this process, torch loaded, that started it (RUSAGE_SELF)
    torch.ones(2**27)  # this process: at least 0.5 GiB at its peak
    big, small = tmp_path / "big.py", tmp_path / "small.py"
    big.write_text("block = bytearray(b'x') * (400 << 20)\n")
    small.write_text("import sys\nblock = bytearray(b'x') * (40 << 20)\nsys.exit(0)\n")
    big_peak = run_with_peak([str(big)])
    small_peak = run_with_peak([str(small)])
    assert 400 / 1024 < big_peak < 500 / 1024 and 40 / 1024 < small_peak < 100 / 1024


def test_run_peak_fails_with_its_run(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys\nsys.exit(2)\n")
    with pytest.raises(subprocess.CalledProcessError):
        run_with_peak([str(script)])


_MODERN = re.compile(r"(resnet18|fastnet) ([\d-]+): probe ([\d.]+) s; (\d+) one by one "
                     r"([\d,.]+) img/s; one (ChannelPack|ModelPack|ModelList) of (\d+) "
                     r"([\d,.]+) img/s \(([\d.]+)x\); torch.func vmap ([\d,.]+) img/s "
                     r"\(([\d.]+)x\)")


def _ratio_of_printed(ratio, rate, one):
    """ratio printed to 0.01 is rate / one, each printed to 0.1 img/s."""
    low, high = (rate - 0.05) / (one + 0.05), (rate + 0.05) / (one - 0.05)
    return low - 0.005 - 1e-9 <= ratio <= high + 0.005 + 1e-9


def test_modern_benchmark_smoke_run(capsys):
    bench_modern.main(["--narrow", "16", "--records", "8", "--pack", "2", "--batch", "4",
                       "--image-size", "16", "--threads", "1"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("machine: ") and out[1].startswith("recipe: sgd nesterov")
    rows = [_MODERN.fullmatch(line) for line in out[2:]]
    assert len(rows) == 2 and all(rows)
    assert [(m[1], m[2]) for m in rows] == [("resnet18", "4-8-16-32"), ("fastnet", "4-16-16")]
    for m in rows:
        one = _number(m[5])
        assert m[6] == "ChannelPack" and m[4] == m[7] == "2"  # both really packed
        assert _ratio_of_printed(_number(m[9]), _number(m[8]), one)
        assert _ratio_of_printed(_number(m[11]), _number(m[10]), one)


@pytest.mark.parametrize("arch", ["resnet18", "fastnet"])
def test_vmap_pack_trains_each_member_as_alone(arch):
    # the torch.func form the benchmark times is a real equivalent of K separate models:
    # float64, outputs, batch-norm running statistics and one SGD step each
    from engine.trainer import seeded_models
    from victims import build_model

    widths = (2, 4, 4, 8) if arch == "resnet18" else (4, 8, 8)
    build = lambda: build_model(arch, 10, (3, 16, 16), layer_dims=widths).double()  # noqa: E731
    members = seeded_models(build, [0, 1, 2])
    pack = bench_modern.VmapPack(members)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (30,), generator=gen)
    idx = torch.stack([torch.randperm(30, generator=gen)[:6] for _ in members])
    opt = torch.optim.SGD(pack.parameters(), lr=0.1)
    out = pack(x, idx)
    torch.nn.functional.cross_entropy(out.flatten(0, 1), y[idx].flatten(),
                                      reduction="sum").backward()
    opt.step()
    for j, m in enumerate(members):
        m.train()
        alone = m(x[idx[j]])
        assert torch.allclose(out[j], alone, atol=1e-12)
        torch.nn.functional.cross_entropy(alone, y[idx[j]], reduction="sum").backward()
        torch.optim.SGD(m.parameters(), lr=0.1).step()
        state = m.state_dict()
        stacked = dict(zip(pack._params, pack.stacked))
        for i, name in enumerate(pack._buffers_named):
            assert torch.allclose(getattr(pack, f"buffer{i}")[j].double(),
                                  state[name].double(), atol=1e-12), name
        for name, p in stacked.items():
            assert torch.allclose(p[j], state[name], atol=1e-12), name


def test_modern_fleet_benchmark_smoke_run(capsys):
    # the GPU check's fleet figure (benchmarks/gpu_check.sh), tiny and on the CPU
    bench_modern.main(["--fleet", "3", "--pack", "2", "--archs", "fastnet", "--narrow", "16",
                       "--records", "8", "--batch", "4", "--image-size", "16", "--threads", "1"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(", cpu")
    m = re.fullmatch(r"fastnet fleet: 3 shadows x 8 records x 1 epochs in packs of 2: "
                     r"([\d.]+) s \(([\d,]+) img/s\)", out[-1])
    assert m, out[-1]
    seconds, rate = float(m[1]), _number(m[2])
    # both printed rounded: seconds to 0.1, img/s to 1
    assert 24 / (seconds + 0.05) - 0.5 <= rate <= 24 / max(seconds - 0.05, 1e-3) + 0.5


_TABULAR = re.compile(r"(\d+) MLPs x (\d+) records x (\d+) epoch\(s\), batch (\d+), (\d+) thread\(s\): "
                      r"one pack ([\d,]+) records/s, one by one ([\d,]+) records/s \(([\d.]+)x\)")


def test_tabular_benchmark_smoke_run(capsys):
    from benchmarks import bench_tabular

    result = bench_tabular.main(["--records", "1500", "--features", "40", "--classes", "5",
                                 "--layers", "32-16", "--victim", "200", "--shadows", "2",
                                 "--epochs", "2", "--attack-epochs", "1", "--threads", "1",
                                 "--pack-models", "3"])
    out = capsys.readouterr().out
    assert re.search(r"data: 1,500 records x 40 binary features, 5 classes \(1,200 train / "
                     r"300 test\)", out)
    timing = result["timing"]
    assert set(timing) >= {"data", "victim", "shadows", "attack", "evaluate", "total"}
    assert sum(v for k, v in timing.items() if k != "total") <= timing["total"]
    assert f"total {timing['total']:.1f} s" in out and "mlp 32-16 tanh" in out
    m = _TABULAR.search(out)
    assert m and (int(m[1]), int(m[2]), int(m[3]), int(m[5])) == (3, 200, 1, 1)
    packed, alone = _number(m[6]), _number(m[7])
    assert (round(packed), round(alone)) == (round(result["packed"]), round(result["alone"]))
    assert abs(float(m[8]) - packed / alone) <= 0.01 * packed / alone + 0.005
    assert 0.4 < result["auc"] <= 1.0 and result["limit"] > 0
