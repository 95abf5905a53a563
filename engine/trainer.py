"""The generic trainer: fit a pack of K models, each on its own records, and predict.

Inputs stay whole on the device; a mini-batch is an index slice that the pack gathers
in its own layout (ModelPack.forward).
Each member draws its own shuffles from its own generator, so a member trained in a
pack sees exactly the batches it would see alone.
"""

import math

import torch
from tqdm import tqdm

from utils.errors import RunError


class Interrupted(Exception):
    """Training stopped from outside (another worker failed, or Ctrl-C)."""


def seeded_models(build_fn, seeds):
    """One model per seed, each initialised under torch.manual_seed(seed) (CPU)."""
    models = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            models.append(build_fn())
    return models


def fit(pack, inputs, targets, train_idx, *, epochs, batch_size, optimizer, criterion,
        seeds, desc, on_epoch=None, stop=None, amp=False):
    """Train every member of `pack` on its row of train_idx ((K, n) int64 on the device).

    inputs: (N, ...) tensor on the device; targets: (N,) on the device; criterion maps
    (m, out) logits and (m,) targets to (m,) losses. The loss minimised is the sum over
    members of each member's mean loss. on_epoch(epoch, (K,) mean losses) is called after
    every epoch. Raises RunError when a loss turns NaN or infinite, and Interrupted when
    the threading.Event `stop` is set (checked every step). amp: bf16 autocast of the
    forward pass (CUDA, or CPU with AVX512-BF16/AMX; the loss and the weights stay float32).
    """
    k, n = train_idx.shape
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    steps = math.ceil(n / batch_size)
    device_type = train_idx.device.type
    pack.train()
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False, dynamic_ncols=True)
    for epoch in bar:
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens])
        order = train_idx.gather(1, perms.to(train_idx.device))
        total = torch.zeros(k, device=train_idx.device)
        for step in range(steps):
            if stop is not None and stop.is_set():
                raise Interrupted(desc)
            idx = order[:, step * batch_size:(step + 1) * batch_size]
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
                logits = pack(inputs, idx)
            losses = criterion(logits.float().flatten(0, 1), targets[idx].flatten())
            member_loss = losses.view(k, -1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            member_loss.sum().backward()
            optimizer.step()
            total += member_loss.detach() * idx.shape[1]
        epoch_loss = (total / n).cpu()  # one host sync per epoch
        if not torch.isfinite(epoch_loss).all():
            raise RunError(f"{desc}: training diverged at epoch {epoch + 1} "
                           f"(loss {epoch_loss.tolist()}); lower the learning rate")
        bar.set_postfix(loss=f"{epoch_loss.mean():.4f}")
        if on_epoch:
            on_epoch(epoch, epoch_loss)
    return pack


@torch.inference_mode()
def predict(pack, inputs, idx, *, batch_size):
    """Members' outputs on their own records: (K, n) indices -> (K, n, out) float32 CPU
    logits, in eval mode."""
    pack.eval()
    out = [pack(inputs, idx[:, s:s + batch_size]).float()
           for s in range(0, idx.shape[1], batch_size)]
    return torch.cat(out, 1).cpu()
