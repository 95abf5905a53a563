"""Training recipes: how fit trains a pack (optimizer, learning-rate schedule, loss, data
augmentation), built from one VICTIM or SHADOW section by one builder. fit runs every
recipe the same way, for a single model or a pack; a new training defense (MixUp, DP-SGD)
is an entry here, not a branch in the training loop."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from engine.optim import build_optimizer, get_criterion

# Pixels a flip_crop record may shift by: a 32x32 crop of the image padded by 4 on each
# side (by reflection, as LiRA's and airbench's training pad; zero pixels would be a
# colour the normalised data does not have).
CROP_PAD = 4


def _constant(schedule, done):
    return 1.0


def _cosine(schedule, done):
    left = schedule.left
    return 0.5 * (1 + math.cos(math.pi * min(done, left) / left))


def _onecycle(schedule, done):
    return max(schedule.left - done, 1) / schedule.left


def _multistep(schedule, done):
    t = done + schedule.warmup
    return schedule.decay ** sum(t >= m for m in schedule.milestones)


# The learning-rate factor `done` steps after the warm-up, by OPTIMIZER.SCHEDULER name.
SCHEDULES = {"none": _constant, "cosine": _cosine, "onecycle": _onecycle,
             "multistep": _multistep}


class Schedule:
    """The learning-rate factor of optimizer step t (0-based), for LambdaLR: a linear
    warm-up from 1/warmup to 1 over the first `warmup` steps, then per `kind` (SCHEDULES):
    none (constant), cosine (half a cosine down to 0 at the end), onecycle (linear down to
    1/remaining steps at the last), multistep (x decay at each milestone step). Holds only
    numbers and names, so the scheduler's state_dict saves and restores it."""

    def __init__(self, kind, total, warmup, milestones, decay):
        self.kind, self.total, self.warmup = kind, total, min(warmup, total)
        self.milestones, self.decay = sorted(milestones), decay
        self.left = max(total - self.warmup, 1)  # steps after the warm-up

    def __call__(self, t):
        if t < self.warmup:
            return (t + 1) / self.warmup
        return SCHEDULES[self.kind](self, t - self.warmup)


def build_scheduler(optimizer, cfg_opt, steps_per_epoch, epochs):
    """A LambdaLR stepped after every optimizer step, or None when the learning rate is
    constant (SCHEDULER none without warm-up: today's recipe, left exactly as it was)."""
    warmup = round(cfg_opt.WARMUP_EPOCHS * steps_per_epoch)
    if cfg_opt.SCHEDULER == "none" and warmup == 0:
        return None
    schedule = Schedule(cfg_opt.SCHEDULER, steps_per_epoch * epochs, warmup,
                        [m * steps_per_epoch for m in cfg_opt.MILESTONES], cfg_opt.LR_DECAY)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class Augment:
    """Random horizontal flips (flip), and crops of the image padded by CROP_PAD pixels
    (flip_crop), of each record of each batch. Its draws come per epoch from each member's
    own generator (right after the member's shuffle), so a pack of K draws what K separate
    runs draw; they are applied on the device, per batch, as one gather."""

    # draws per record: flip (0/1), row shift, column shift (0 .. 2 * pad)
    NUM_DRAWS = 3

    def __init__(self, kind):
        self.pad = CROP_PAD if kind == "flip_crop" else 0

    def draw(self, gen, n):
        """(n, 3) int64 draws for n records, from the CPU generator gen."""
        flips = torch.randint(2, (n, 1), generator=gen)
        shifts = (torch.randint(2 * self.pad + 1, (n, 2), generator=gen) if self.pad
                  else torch.full((n, 2), 0))
        return torch.cat([flips, shifts], 1)

    def apply(self, inputs, idx, draws):
        """Augmented records: inputs (N, C, H, W) on the device, idx (K, B) record indices,
        draws (K, B, 3) -> (K, B, C, H, W). A record shifted by (dy, dx) - pad and flipped
        reads pixel (i + dy - pad, W - 1 - j + dx - pad) of its image (j for no flip),
        reflected at the borders."""
        h, w = inputs.shape[-2:]
        rows = torch.arange(h, device=idx.device)
        cols = torch.arange(w, device=idx.device)
        flip = draws[..., :1].bool()
        rows = _reflect(rows + draws[..., 1:2] - self.pad, h)  # (K, B, H)
        cols = _reflect(torch.where(flip, w - 1 - cols, cols) + draws[..., 2:3] - self.pad, w)
        chans = torch.arange(inputs.shape[1], device=idx.device)
        return inputs[idx[..., None, None, None], chans[:, None, None],
                      rows[..., None, :, None], cols[..., None, None, :]]


def _reflect(t, size):
    """Indices in -size+1 .. 2*size-2 mirrored into 0 .. size-1 (no edge repeat)."""
    t = t.abs()
    return torch.where(t > size - 1, 2 * (size - 1) - t, t)


class MixUp:
    """MixUp (Zhang et al. 2018): each record is trained on as lam * itself + (1 - lam) *
    a partner, with the loss lam * loss(its label) + (1 - lam) * loss(the partner's), lam
    ~ Beta(alpha, alpha). Drawn per record from the member's own generator after its
    shuffle (and augmentation draws): the partner is a uniformly drawn record of the same
    member's training set (what an in-batch permutation of a random batch amounts to), and
    lam, one per record, is stored in the plan as an integer in units of 2**-24."""

    NUM_DRAWS = 2  # partner position in the training set, lam * 2**24
    SCALE = 2 ** 24

    def __init__(self, alpha):
        self.alpha = alpha

    def draw(self, gen, n):
        """(n, 2) int64 draws for n records, from the CPU generator gen."""
        partner = torch.randint(n, (n, 1), generator=gen)
        seed = int(torch.randint(2 ** 62, (1,), generator=gen))
        with torch.random.fork_rng(devices=[]):  # Beta sampling takes no generator
            torch.manual_seed(seed)
            lam = torch.distributions.Beta(self.alpha, self.alpha).sample((n, 1))
        return torch.cat([partner, (lam.double() * self.SCALE).round().long()], 1)

    def mix(self, x, xp, draws):
        """lam * x + (1 - lam) * xp for x, xp (K, B, ...) and draws (K, B, 2); returns
        (mixed, (K, B) lam)."""
        lam = draws[..., 1].to(x.dtype) / self.SCALE
        w = lam.view(*lam.shape, *[1] * (x.dim() - 2))
        return w * x + (1 - w) * xp, lam


def build_mixup(alpha):
    """The MixUp of TRAIN.MIXUP_ALPHA, or None for 0."""
    return MixUp(alpha) if alpha > 0 else None


AUGMENTS = {"none": None, "flip": Augment, "flip_crop": Augment}


def build_augment(kind):
    """The Augment of TRAIN.AUGMENT, or None for none."""
    return AUGMENTS[kind](kind) if AUGMENTS[kind] else None


@dataclass
class Recipe:
    """What fit needs besides the pack and the data."""

    optimizer: torch.optim.Optimizer
    # (m, C) logits, (m,) targets -> (m,) per-record losses
    criterion: Callable
    # stepped after every optimizer step; None: a constant learning rate
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    # random flips/crops of each batch; None: the records as they are
    augment: Augment | None = None
    # MixUp of each record with a partner; None: none
    mixup: MixUp | None = None

    @property
    def augment_draws(self):
        """Per record, the number of augmentation draws (the MixUp draws follow them)."""
        return self.augment.NUM_DRAWS if self.augment else 0

    def draw(self, gen, n):
        """(n, draws) int64 draws for n records from the CPU generator gen: augmentation,
        then MixUp; None when the recipe draws nothing."""
        cols = [part.draw(gen, n) for part in (self.augment, self.mixup) if part]
        return torch.cat(cols, 1) if cols else None

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler:
            self.scheduler.load_state_dict(state["scheduler"])


def build_recipe(node, params, device, steps_per_epoch):
    """The recipe of a VICTIM or SHADOW config section (after infer_cfg) for a pack's
    parameters, trained node.TRAIN.NUM_EPOCHS epochs of steps_per_epoch steps."""
    optimizer = build_optimizer(params, node.OPTIMIZER, device)
    criterion = get_criterion("classifier", node.CRITERION)
    if node.TRAIN.LABEL_SMOOTHING:
        criterion = partial(criterion, label_smoothing=node.TRAIN.LABEL_SMOOTHING)
    return Recipe(optimizer, criterion,
                  build_scheduler(optimizer, node.OPTIMIZER, steps_per_epoch,
                                  node.TRAIN.NUM_EPOCHS),
                  build_augment(node.TRAIN.AUGMENT), build_mixup(node.TRAIN.MIXUP_ALPHA))
