"""Speed benchmark (issue 3): shadow training throughput against the original toolkit's
way of feeding data, the machine's FLOP limit, attack-model training, and per-stage
seconds and peak memory (each run's own largest resident set) of whole runs. All figures
come from one run on one machine.

    python -m benchmarks.bench_speed --root ../shared/data [--runs quick default]

(a) original feeding: per-image PIL conversion + ToTensor + Normalize through a
    DataLoader with 2 workers, one SimpleCNN, batch 64 (as the original toolkit);
(b) ours: tensor-resident data, index-slice batches, shadows trained in packs
    (engine/pack.py), NUM_WORKERS packs side by side, exactly the engine's code path;
    in float32 (the default) with the fused convolution + max-pool kernel (engine/fused.py,
    FUSED_CPU_KERNEL True, the default) and without it, and with bf16 autocast
    (MIXED_PRECISION True; the kernel is float32 only, so PyTorch's ops run).
Every throughput is the best of --repeats measurements taken in turn (this kind of
machine is shared and noisy; the ratios come from one run).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from attack_models import FCNet
from configs.defaults import get_cfg
from datasets import load_dataset
from engine import fused
from engine.data import normalised_inputs
from engine.optim import CRITERIA, build_optimizer
from engine.pack import ModelPack
from engine.trainer import fit, seeded_models
from victims import MODELS

_MEAN, _STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
_CE = CRITERIA["classifier"]["ce"]
_RECIPE = get_cfg().VICTIM.OPTIMIZER  # the shadows' optimizer in defaults.py (fused on CPU)


class _PilCifar(torch.utils.data.Dataset):
    """The original's dataset: one PIL image and its transforms per __getitem__."""

    def __init__(self, x, y):
        import torchvision.transforms as T

        self.x, self.y = x.permute(0, 2, 3, 1).numpy(), y.numpy()
        self.tf = T.Compose([T.ToTensor(), T.Normalize(_MEAN, _STD)])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.tf(Image.fromarray(self.x[i])), int(self.y[i])


def original_feeding(x, y, steps):
    """img/s of one SimpleCNN fed by a 2-worker DataLoader of per-image PIL transforms."""
    torch.set_num_threads(2)
    model = MODELS["simplecnn"]()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader = torch.utils.data.DataLoader(_PilCifar(x, y), batch_size=64, shuffle=True,
                                         num_workers=2, persistent_workers=False)
    it, seen = iter(loader), 0
    for _ in range(5):  # warm-up: workers started
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        xb, yb = next(it)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(yb)
    return seen / (time.perf_counter() - start)


def packed_training(x, y, models_per_pack, workers, records, epochs, amp=False, fused=True):
    """img/s of `workers` packs of `models_per_pack` shadows trained side by side
    (amp: bf16 autocast, as MIXED_PRECISION True; fused: FUSED_CPU_KERNEL)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1 if workers > 1 else old)

    def train(w):
        seeds = [w * 100 + j for j in range(models_per_pack)]
        pack = ModelPack(seeded_models(MODELS["simplecnn"], seeds),
                         channels_last=models_per_pack > 1, fused=fused)
        gen = torch.Generator().manual_seed(w)
        idx = torch.stack([torch.randperm(len(y), generator=gen)[:records] for _ in seeds])
        fit(pack, x, y, idx, epochs=epochs, batch_size=64,
            optimizer=build_optimizer(pack.parameters(), _RECIPE, torch.device("cpu")),
            criterion=_CE, seeds=seeds, desc=f"pack {w}", amp=amp)

    start = time.perf_counter()
    threads = [threading.Thread(target=train, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    torch.set_num_threads(old)
    return workers * models_per_pack * records * epochs / seconds


def flop_limit():
    """(training FLOP per image of SimpleCNN, fp32 matmul FLOP/s here, images/s limit)."""
    model = MODELS["simplecnn"]()
    xb, yb = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
    per_image = counter.get_total_flops() / 64
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    flops = 0.0
    for _ in range(5):  # the peak: best of 5 timings (the machine is shared)
        reps, start = 10, time.perf_counter()
        for _ in range(reps):
            a @ b
        flops = max(flops, reps * 2 * 2048 ** 3 / (time.perf_counter() - start))
    return per_image, flops, flops / per_image


def attack_training(one_by_one):
    """Seconds to train 10 fcnet attack models (30000 records each, 1 epoch, batch 64)."""
    x, y = torch.rand(10 * 30000, 10), torch.randint(0, 2, (10 * 30000,))
    idx = torch.arange(len(y)).view(10, 30000)
    groups = [[k] for k in range(10)] if one_by_one else [list(range(10))]
    start = time.perf_counter()
    for g in groups:
        pack = ModelPack(seeded_models(FCNet, g))
        fit(pack, x, y, idx[g], epochs=1, batch_size=64,
            optimizer=torch.optim.Adam(pack.parameters(), 1e-4),
            criterion=CRITERIA["attack"]["bce"], seeds=g, desc="attack")
    return time.perf_counter() - start


# Run in a child: the script argv[2] with its arguments, then the child's own peak
# resident set into the file argv[1]: VmHWM, the high-water mark of its memory map (its
# threads included), in KiB. Neither ru_maxrss gives it: RUSAGE_CHILDREN here is the
# largest child reaped so far (a DataLoader worker of original_feeding, an earlier run),
# and a child's RUSAGE_SELF starts from this process's peak, carried over the fork and
# exec that started it.
_OWN_PEAK = """
import runpy, sys
peak_file, sys.argv = sys.argv[1], sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    with open("/proc/self/status") as status, open(peak_file, "w") as f:
        f.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def run_with_peak(args):
    """Run `python SCRIPT ARG...` (args: [SCRIPT, ARG...]) quietly; return its own peak
    resident memory in GiB (Linux: read from /proc)."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = os.path.join(tmp, "peak_kib")
        subprocess.run([sys.executable, "-c", _OWN_PEAK, peak_file, *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(peak_file) as f:
            return int(f.read()) / 2**20


def whole_run(root, preset):
    """(metrics.json timing, the run's own peak RSS in GiB, AUC) of `python run_attack.py`
    with a preset ("default": defaults.py); a "+bf16" suffix adds MIXED_PRECISION True."""
    preset, bf16 = preset.removesuffix("+bf16"), preset.endswith("+bf16")
    with tempfile.TemporaryDirectory() as out:
        args = ["run_attack.py", "DATASET.ROOT", root, "OUTPUT_DIR", out]
        if preset != "default":
            args[1:1] = ["--cfg", f"configs/{preset}.yaml"]
        if bf16:
            args += ["MIXED_PRECISION", "True"]
        peak = run_with_peak(args)
        with open(os.path.join(out, "metrics.json")) as f:
            m = json.load(f)
    return m["timing"], peak, m["overall"]["auc"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default="./data", help="DATASET.ROOT")
    p.add_argument("--runs", nargs="*", default=["quick", "default", "default+bf16"],
                   help="whole runs to time: quick, default or a preset name, "
                        "+bf16 for MIXED_PRECISION True")
    p.add_argument("--steps", type=int, default=150,
                   help="mini-batches per model measured")
    p.add_argument("--repeats", type=int, default=2, help="measurements per setting")
    args = p.parse_args(argv)
    data = load_dataset("cifar10", args.root, False)
    x, y = data["train_x"], data["train_y"]
    xn = normalised_inputs(x, _MEAN, _STD, torch.device("cpu"))  # as engine/data.py
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    per_image, flops, limit = flop_limit()
    print(f"SimpleCNN training: {per_image / 1e6:.2f} MFLOP/image; fp32 matmul "
          f"{flops / 1e9:.0f} GFLOP/s -> limit {limit:,.0f} img/s")
    # (models per pack, workers, bf16, fused kernel)
    settings = [(1, 1, False, False), (8, 2, False, False), (16, 2, False, False),
                (1, 1, False, True), (4, 2, False, True), (8, 2, False, True),
                (16, 2, False, True), (8, 2, True, False), (16, 2, True, False)]
    if fused.load_kernel() is None:
        settings = [s for s in settings if not s[3]]
    rates = {s: 0.0 for s in ["original", *settings]}
    for _ in range(args.repeats):  # in turn, so that a noisy minute hits every setting
        rates["original"] = max(rates["original"], original_feeding(x, y, args.steps))
        for s in settings:
            rate = packed_training(xn, y, s[0], s[1], 64 * args.steps, 1, s[2], s[3])
            rates[s] = max(rates[s], rate)
    orig = rates.pop("original")
    print(f"(a) original feeding (PIL per image, DataLoader 2 workers): {orig:,.0f} img/s")
    names = {(False, False): "float32", (False, True): "float32, fused kernel",
             (True, False): "bf16"}
    for (k, w, amp, fuse), rate in rates.items():
        print(f"    packs of {k} shadows x {w} worker(s), {names[amp, fuse]}: {rate:,.0f} img/s")
    for kind, name in names.items():
        found = [(r, k, w) for (k, w, *s), r in rates.items() if tuple(s) == kind]
        if found:
            rate, k, w = max(found)
            print(f"(b) ours, {name}, best ({k} per pack x {w} workers): {rate:,.0f} img/s "
                  f"= {rate / orig:.1f}x the original feeding, {rate / limit:.0%} of the "
                  f"float32 FLOP limit")
    seq, grouped = attack_training(True), attack_training(False)
    print(f"10 attack models, 1 epoch on 30000 records each: one by one {seq:.1f} s, "
          f"as one pack {grouped:.1f} s ({seq / grouped:.1f}x)")
    for preset in args.runs:
        timing, peak, auc = whole_run(args.root, preset)
        stages = ", ".join(f"{k} {v:.1f}" for k, v in timing.items() if k != "total")
        share = (timing.get("attack", 0) + timing.get("evaluate", 0)) / timing["total"]
        with_report = share + timing.get("report", 0) / timing["total"]
        print(f"run '{preset}': total {timing['total']:.1f} s ({stages}); attack+evaluate "
              f"{share:.1%} of total ({with_report:.1%} with the report); "
              f"peak memory {peak:.2f} GiB; AUC {auc:.3f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
