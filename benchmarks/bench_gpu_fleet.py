"""GPU shadow-fleet benchmark (issue 3): S SimpleCNN shadows x N records x E epochs
trained in packs with the engine's trainer, data resident on the GPU.

    python -m benchmarks.bench_gpu_fleet --shadows 64 --records 15000 --epochs 50

Images are random uint8 of CIFAR-10's shape: the time does not depend on pixel values
(the real data does not fit the device machine's upload limit).
"""

import argparse
import time

import torch

from engine.data import normalised_images
from engine.optim import CRITERIA
from engine.pack import ModelPack
from engine.trainer import fit, seeded_models
from victims import MODELS


def fleet(shadows, per_pack, records, epochs, batch, amp, device, channels_last=True):
    """Seconds to train the fleet, pack after pack."""
    x = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8)
    x = normalised_images(x, (0.49, 0.48, 0.45), (0.2, 0.2, 0.2), device)
    y = torch.randint(0, 10, (50000,), device=device)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for first in range(0, shadows, per_pack):
        seeds = list(range(first, min(first + per_pack, shadows)))
        pack = ModelPack(seeded_models(MODELS["simplecnn"], seeds),
                         channels_last=channels_last).to(device)
        idx = torch.stack([torch.randperm(50000, device=device)[:records] for _ in seeds])
        opt = torch.optim.Adam(pack.parameters(), 1e-3, fused=True)
        fit(pack, x, y, idx, epochs=epochs, batch_size=batch, optimizer=opt,
            criterion=CRITERIA["classifier"]["ce"], seeds=seeds,
            desc=f"pack {first}", amp=amp)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shadows", type=int, default=64)
    p.add_argument("--records", type=int, default=15000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--packs", type=int, nargs="+", default=[64, 32, 16])
    p.add_argument("--probe-epochs", type=int, default=2, help="epochs of each probe setting")
    p.add_argument("--max-seconds", type=float, default=240,
                   help="measure fewer epochs (and scale) when the full fleet would take longer")
    args = p.parse_args(argv)
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(), torch.__version__)
    torch.backends.cudnn.benchmark = True
    fleet(args.shadows, args.packs[0], 2048, 1, args.batch, False, device)  # warm-up, autotune
    results = []
    for per_pack in args.packs:
        for amp, channels_last in ((False, True), (False, False), (True, True)):
            s = fleet(args.shadows, per_pack, args.records, args.probe_epochs, args.batch, amp,
                      device, channels_last)
            rate = args.shadows * args.records * args.probe_epochs / s
            print(f"probe: {per_pack} per pack, bf16 autocast {amp}, channels_last "
                  f"{channels_last}: {rate:,.0f} img/s")
            results.append((rate, per_pack, amp, channels_last))
    rate, per_pack, amp, channels_last = max(results)
    epochs = args.epochs
    projected = args.shadows * args.records * epochs / rate
    if projected > args.max_seconds:  # keep the check inside the device lease
        epochs = max(1, int(epochs * args.max_seconds / projected))
        print(f"projected {projected:.0f} s for {args.epochs} epochs: measuring {epochs}")
    s = fleet(args.shadows, per_pack, args.records, epochs, args.batch, amp, device,
              channels_last)
    total = args.shadows * args.records * epochs
    print(f"fleet: {args.shadows} shadows x {args.records} records x {epochs} epochs "
          f"({per_pack} per pack, bf16 {amp}, channels_last {channels_last}): {s:.1f} s, "
          f"{total / s:,.0f} img/s, "
          f"{s * args.epochs / epochs:.1f} s for {args.epochs} epochs; "
          f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
