"""GPU shadow-fleet benchmark (issue 3): S SimpleCNN shadows x N records x E epochs
trained in packs with the engine's trainer, data resident on the GPU.

    python -m benchmarks.bench_gpu_fleet --shadows 64 --records 15000 --epochs 50
    python -m benchmarks.bench_gpu_fleet --device cpu --shadows 4 --records 256 --packs 2 \
        --probe-epochs 1 --epochs 1   # a smoke run where there is no GPU

Images are random uint8 of CIFAR-10's shape: the time does not depend on pixel values
(the real data does not fit the device machine's upload limit).
"""

import argparse
import time

import torch

from engine.data import normalised_inputs
from engine.optim import CRITERIA
from engine.pack import ModelPack
from engine.trainer import GraphSteps, fit, seeded_models
from victims import MODELS


def images(n, device):
    """n random uint8 images of CIFAR-10's shape, normalised, and random labels."""
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    return (normalised_inputs(x, (0.49, 0.48, 0.45), (0.2, 0.2, 0.2), device),
            torch.randint(0, 10, (n,), device=device))


def fleet(data, shadows, per_pack, records, epochs, batch, amp, channels_last=True,
          graphs=True):
    """(seconds to train the fleet on data (images, labels), pack after pack; whether its
    steps were CUDA graph replays). graphs: capture them, as the engine does with
    CUDA_GRAPHS True; after a failed capture the packs train eagerly, as in the engine."""
    x, y = data
    device, pool = x.device, len(x)
    step_graph = GraphSteps() if graphs else None
    sync(device)
    start = time.perf_counter()
    for first in range(0, shadows, per_pack):
        seeds = list(range(first, min(first + per_pack, shadows)))
        pack = ModelPack(seeded_models(MODELS["simplecnn"], seeds),
                         channels_last=channels_last).to(device)
        idx = torch.stack([torch.randperm(pool, device=device)[:records] for _ in seeds])
        opt = torch.optim.Adam(pack.parameters(), 1e-3, fused=True)
        fit(pack, x, y, idx, epochs=epochs, batch_size=batch, optimizer=opt,
            criterion=CRITERIA["classifier"]["ce"], seeds=seeds,
            desc=f"pack {first}", amp=amp, step_graph=step_graph)
    sync(device)
    return time.perf_counter() - start, graphs and not step_graph.failed


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shadows", type=int, default=64)
    p.add_argument("--records", type=int, default=15000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--packs", type=int, nargs="+", default=[64, 32])
    p.add_argument("--probe-epochs", type=int, default=2, help="epochs of each probe setting")
    p.add_argument("--max-seconds", type=float, default=240,
                   help="measure fewer epochs (and scale) when the full fleet would take longer")
    p.add_argument("--device", default="cuda",
                   help="cuda, or cpu for a smoke run of this script (no CUDA graphs there)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    print(torch.cuda.get_device_name(device) if cuda else "cpu", torch.__version__)
    torch.backends.cudnn.benchmark = True
    data = images(50000 if cuda else 4 * args.records, device)
    fleet(data, args.shadows, args.packs[0], min(2048, args.records), 1, args.batch, False,
          graphs=cuda)  # warm-up
    settings = [(per_pack, False, True, graphs) for per_pack in args.packs
                for graphs in (True, False)[not cuda:]]
    settings += [(args.packs[0], True, True, cuda), (args.packs[0], False, False, cuda)]
    results = []
    for per_pack, amp, channels_last, graphs in settings:
        s, graphs = fleet(data, args.shadows, per_pack, args.records, args.probe_epochs,
                          args.batch, amp, channels_last, graphs)
        rate = args.shadows * args.records * args.probe_epochs / s
        steps = -(-args.shadows // per_pack) * args.probe_epochs * -(-args.records // args.batch)
        print(f"probe: {per_pack} per pack, bf16 autocast {amp}, channels_last "
              f"{channels_last}, CUDA graphs {graphs}: {rate:,.0f} img/s, "
              f"{1000 * s / steps:.2f} ms per step")
        results.append((rate, per_pack, amp, channels_last, graphs))
    rate, per_pack, amp, channels_last, graphs = max(results)
    epochs = args.epochs
    projected = args.shadows * args.records * epochs / rate
    if projected > args.max_seconds:  # keep the check inside the device lease
        epochs = max(1, int(epochs * args.max_seconds / projected))
        print(f"projected {projected:.0f} s for {args.epochs} epochs: measuring {epochs}")
    s, graphs = fleet(data, args.shadows, per_pack, args.records, epochs, args.batch, amp,
                      channels_last, graphs)
    total = args.shadows * args.records * epochs
    print(f"fleet: {args.shadows} shadows x {args.records} records x {epochs} epochs "
          f"({per_pack} per pack, bf16 {amp}, channels_last {channels_last}, CUDA graphs "
          f"{graphs}, cudnn.benchmark True): {s:.1f} s, "
          f"{total / s:,.0f} img/s, "
          f"{s * args.epochs / epochs:.1f} s for {args.epochs} epochs"
          + (f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
             if cuda else ""))


if __name__ == "__main__":
    main()
