"""CPU training speed of the modern victims (issue 15): resnet18 and fastnet trained as one
pack of K (engine/pack.py ChannelPack: grouped convolutions, batch norms over K*C channels,
the model's own forward) against the same K models one after another and against the
same K models stacked with torch.func (stack_module_state, functional_call under vmap: the
other way to train K models as one that issue 15 names), in one run, with the modern
recipe (Nesterov SGD, onecycle with warm-up, label smoothing, flip_crop).

    python -m benchmarks.bench_modern [--archs resnet18 fastnet] [--pack 4] [--records 64]
                                      [--epochs 1] [--batch 64] [--repeats 1]
    python -m benchmarks.bench_modern --fleet 64 --pack 16 --archs fastnet --records 25000 \
        --epochs 10 --batch 1024 --device cuda   # a GPU fleet: seconds for 64 shadows

Records are CIFAR-shaped random pixels (speed does not depend on them). Each figure is the
best of --repeats measurements taken in turn (the machine is shared and noisy; compare
the ratios within one run). Building a pack runs build_pack's float64 probe once per
architecture; its seconds are printed apart and not counted in img/s.
"""

import argparse
import copy
import inspect
import math
import os
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from configs.config import build_cfg
from engine.pack import build_pack
from engine.recipe import build_recipe
from engine.trainer import fit, seeded_models
from victims import MODELS, build_model

_ARCHS = ("fastnet", "resnet18")
_RECIPE = ["VICTIM.OPTIMIZER.NAME", "sgd", "VICTIM.OPTIMIZER.ALPHA", "0.1",
           "VICTIM.OPTIMIZER.MOMENTUM", "0.9", "VICTIM.OPTIMIZER.NESTEROV", "True",
           "VICTIM.OPTIMIZER.GAMMA", "5e-4", "VICTIM.OPTIMIZER.SCHEDULER", "onecycle",
           "VICTIM.OPTIMIZER.WARMUP_EPOCHS", "0.25", "VICTIM.TRAIN.LABEL_SMOOTHING", "0.1",
           "VICTIM.TRAIN.AUGMENT", "flip_crop"]


class VmapPack(nn.Module):
    """K same-architecture models as one through torch.func: their parameters and buffers
    stacked (stack_module_state), the model's forward run per member under vmap
    (functional_call), so that batch norms update each member's own running statistics.
    Same interface as the engine's packs: forward(inputs, idx) gives member j's outputs on
    inputs[idx[j]] as (K, B, out). Measured here against ChannelPack; the engine does not
    use it (docs/speed.md says why)."""

    def __init__(self, models):
        super().__init__()
        self.k = len(models)
        self._base = [copy.deepcopy(models[0]).to("meta")]  # a list: not a submodule
        params, buffers = stack_module_state(models)
        self._params = list(params)
        self._buffers_named = list(buffers)
        frozen = {n for n, p in models[0].named_parameters() if not p.requires_grad}
        self.stacked = nn.ParameterList(
            nn.Parameter(params[n].detach().clone(), requires_grad=n not in frozen)
            for n in self._params)
        for i, n in enumerate(self._buffers_named):
            self.register_buffer(f"buffer{i}", buffers[n].clone())

    def forward(self, inputs, idx):
        base = self._base[0].train(self.training)
        params = dict(zip(self._params, self.stacked))
        buffers = {n: getattr(self, f"buffer{i}") for i, n in enumerate(self._buffers_named)}

        def member(p, b, x):
            return functional_call(base, (p, b), (x,))

        return vmap(member, randomness="different")(params, buffers, inputs[idx])


def _node(epochs, batch):
    cfg, _ = build_cfg("", ["OUTPUT_DIR", os.devnull, "VICTIM.TRAIN.NUM_EPOCHS", str(epochs),
                            "VICTIM.TRAIN.BATCH_SIZE", str(batch), *_RECIPE])
    return cfg.SHADOW


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train(packs, x, y, idx, node, seeds):
    """Seconds to train each pack in turn, member j of all packs on row j of idx; packs:
    an iterable (a generator builds each pack when its turn comes, inside the timing)."""
    _sync(x.device)
    start = time.perf_counter()
    row = 0
    for pack in packs:
        rows = idx[row:row + pack.k]
        steps = math.ceil(rows.shape[1] / node.TRAIN.BATCH_SIZE)
        fit(pack, x, y, rows, epochs=node.TRAIN.NUM_EPOCHS, batch_size=node.TRAIN.BATCH_SIZE,
            recipe=build_recipe(node, pack.parameters(), x.device, steps),
            seeds=seeds[row:row + pack.k], desc="bench")
        row += pack.k
    _sync(x.device)
    return time.perf_counter() - start


def warm_up():
    """One tiny ChannelPack probed and trained, untimed: the process's one-time start-up
    (the first float64 and autograd calls, the optimizer's first import of torch._dynamo:
    seconds here) then counts in no figure."""
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    build = lambda: build_model("resnet18", 10, (3, 16, 16), layer_dims=(2, 2, 2, 2))  # noqa: E731
    pack = build_pack(seeded_models(build, [0, 1]), x)
    _train([pack], x, y, torch.arange(16).view(2, 8), _node(1, 8), [0, 1])


def measure(arch, args, x, y):
    """(probe seconds, {"one", "pack", "vmap": img/s}, pack form, widths) for one
    architecture."""
    published = inspect.signature(MODELS[arch]).parameters["layer_dims"].default
    widths = [max(1, w // args.narrow) for w in published]
    build = lambda: build_model(arch, 10, tuple(x.shape[1:]), layer_dims=widths)  # noqa: E731
    seeds = list(range(args.pack))
    gen = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(len(y), generator=gen)[:args.records] for _ in seeds])
    node = _node(args.epochs, args.batch)
    start = time.perf_counter()
    build_pack(seeded_models(build, seeds[:1]), x, name=arch)  # the probe, once
    probe = time.perf_counter() - start
    images = args.pack * args.records * args.epochs
    best = {"one": 0.0, "pack": 0.0, "vmap": 0.0}
    form = ""
    for _ in range(args.repeats):
        ones = [build_pack(seeded_models(build, [s]), x, name=arch) for s in seeds]
        best["one"] = max(best["one"], images / _train(ones, x, y, idx, node, seeds))
        pack = build_pack(seeded_models(build, seeds), x, name=arch)
        form = type(pack).__name__
        best["pack"] = max(best["pack"], images / _train([pack], x, y, idx, node, seeds))
        stacked = VmapPack(seeded_models(build, seeds))
        best["vmap"] = max(best["vmap"], images / _train([stacked], x, y, idx, node, seeds))
    return probe, best, form, widths


def fleet(arch, args, x, y):
    """(seconds, img/s) to train args.fleet shadows of `arch` (widths / args.narrow) in
    packs of args.pack, each on args.records records drawn from x, built as the engine
    builds them (each pack is built when its turn comes, as in a run, and its build
    counts)."""
    published = inspect.signature(MODELS[arch]).parameters["layer_dims"].default
    widths = [max(1, w // args.narrow) for w in published]
    build = lambda: build_model(arch, 10, tuple(x.shape[1:]), layer_dims=widths)  # noqa: E731
    seeds = list(range(args.fleet))
    gen = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(len(y), generator=gen)[:args.records]
                       for _ in seeds]).to(x.device)
    packs = (build_pack(seeded_models(build, seeds[s:s + args.pack]), x,
                        channels_last=x.device.type == "cuda", name=arch).to(x.device)
             for s in range(0, args.fleet, args.pack))
    seconds = _train(packs, x, y, idx, _node(args.epochs, args.batch), seeds)
    return seconds, args.fleet * args.records * args.epochs / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "fastnet"],
                        choices=_ARCHS)
    parser.add_argument("--pack", type=int, default=4, help="models per pack (K)")
    parser.add_argument("--records", type=int, default=64, help="records per model")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--narrow", type=int, default=1,
                        help="divide every stage width by this (1: the published widths)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: default")
    parser.add_argument("--fleet", type=int, default=0,
                        help="time this many shadows in packs of --pack instead of "
                             "comparing a pack with one by one")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (with --fleet)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    n = max(2 * args.records, 512)
    device = torch.device(args.device)
    x = torch.randn(n, 3, args.image_size, args.image_size, generator=gen).to(device)
    y = torch.randint(0, 10, (n,), generator=gen).to(device)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    print(f"recipe: sgd nesterov, onecycle, label smoothing 0.1, flip_crop; {args.records} "
          f"records x {args.epochs} epoch(s) per model, batch {args.batch}, "
          f"{args.image_size}x{args.image_size} images")
    if args.fleet:
        for arch in args.archs:
            seconds, rate = fleet(arch, args, x, y)
            print(f"{arch} fleet: {args.fleet} shadows x {args.records} records x "
                  f"{args.epochs} epochs in packs of {args.pack}: {seconds:.1f} s "
                  f"({rate:,.0f} img/s)")
        return
    warm_up()
    for arch in args.archs:
        probe, rate, form, widths = measure(arch, args, x, y)
        one = rate["one"]
        print(f"{arch} {'-'.join(map(str, widths))}: probe {probe:.1f} s; "
              f"{args.pack} one by one {one:,.1f} img/s; one {form} of {args.pack} "
              f"{rate['pack']:,.1f} img/s ({rate['pack'] / one:.2f}x); torch.func vmap "
              f"{rate['vmap']:,.1f} img/s ({rate['vmap'] / one:.2f}x)")


if __name__ == "__main__":
    main()
