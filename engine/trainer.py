"""The generic trainer: fit a pack of K models, each on its own records, and predict.

Inputs stay whole on the device; a mini-batch is an index slice that the pack gathers
in its own layout (ModelPack.forward), or that the recipe's augmentation or MixUp gathers
first. Each member draws its own shuffles (and augmentations, MixUp partners) from its own
generator, so a member trained in a pack sees exactly the batches it would see alone.
"""

import logging
import math
import threading

import torch
from tqdm import tqdm

from engine.recipe import Recipe
from utils.errors import RunError


class Interrupted(Exception):
    """Training stopped from outside (another worker failed, or Ctrl-C)."""


# Layers initialise their weights from torch's one process-wide CPU generator: packs built
# in worker threads at the same time would draw from it in turns (and give different
# models from run to run), so building seeded models is one thread at a time.
INIT_LOCK = threading.Lock()


def pack_label(names):
    """How logs and progress bars name a pack: its first member, "+" when it has more."""
    return names[0] + ("+" if len(names) > 1 else "")


def seeded_models(build_fn, seeds):
    """One model per seed, each initialised under torch.manual_seed(seed) (CPU); safe to
    call from several threads at once."""
    models = []
    with INIT_LOCK:
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                models.append(build_fn())
    return models


class CudaGraphStep:
    """A training step of fixed shape, captured once as a CUDA graph and then replayed:
    one launch per step instead of dozens, with no Python in between. Before the capture
    it runs WARMUP real steps eagerly on a side stream (cuDNN and cuBLAS settle their
    choices and workspaces, the optimizer creates its state), as torch.cuda.graphs asks.
    A replay runs exactly the captured kernels on the same memory: the step's record
    indices are copied into the captured index tensor, and the parameters, gradients,
    optimizer state and loss total are updated in place, as the eager step does.
    Where the capture fails, on_failure(error) is called (default: log a warning) and the
    step runs eagerly from then on."""

    WARMUP = 3

    def __init__(self, step, optimizer, on_failure=None):
        self.step, self.optimizer = step, optimizer
        self.on_failure = on_failure or _warn_capture_failed
        self.warmup, self.graph, self.static_idx, self.failed = self.WARMUP, None, None, False

    def __call__(self, idx):
        if self.failed:
            return self.step(idx)
        if self.graph is not None:
            self.static_idx.copy_(idx)
        elif self.warmup > 0:
            self.warmup -= 1
            return self._warm(idx)
        else:
            static = self.static_idx = idx.clone()
            try:
                self.graph = self._capture(lambda: self.step(static))
            except RuntimeError as e:
                self.failed = True
                self.on_failure(e)
                return self.step(idx)
        self.graph.replay()

    def _warm(self, idx):
        side, main = torch.cuda.Stream(), torch.cuda.current_stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            self.step(idx)
        main.wait_stream(side)

    def _capture(self, fn):
        # a capturable optimizer keeps its step counts on the device; fused Adam computes
        # the same either way, so the flag is on only while capturing (eager steps with it
        # on would warn)
        groups = [g for g in self.optimizer.param_groups if "capturable" in g]
        saved = [g["capturable"] for g in groups]
        for g in groups:
            g["capturable"] = True
        try:
            return self._record(fn)
        finally:
            for g, c in zip(groups, saved):
                g["capturable"] = c

    def _record(self, fn):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph


def _warn_capture_failed(error):
    logging.getLogger("mia").warning(
        "CUDA graph capture failed (%s); training runs without graphs (set CUDA_GRAPHS False "
        "to skip the attempt)", str(error).strip().splitlines()[0][:200])


class GraphSteps:
    """The step_graph of every fit on one device: each fit's step becomes a `step_cls`
    (CudaGraphStep) until a capture fails; from then on fits (the victim, every shadow
    pack, the attack models) train eagerly without trying again, and the failure is
    logged once, whichever of the worker threads met it first."""

    def __init__(self, step_cls=CudaGraphStep):
        self.step_cls, self.failed = step_cls, False
        self._lock = threading.Lock()

    def __call__(self, step, optimizer):
        return step if self.failed else self.step_cls(step, optimizer, self._on_failure)

    def _on_failure(self, error):
        with self._lock:
            first, self.failed = not self.failed, True
        if first:
            _warn_capture_failed(error)


# device -> GraphSteps of the current run; setup_run empties it, so a new run tries again
_GRAPH_STEPS = {}
_GRAPH_STEPS_LOCK = threading.Lock()


def cuda_step_graph(enabled, device):
    """The step_graph for fit: the run's GraphSteps of `device` when `enabled`
    (CUDA_GRAPHS) and the device is CUDA, else None."""
    if not enabled or device.type != "cuda":
        return None
    with _GRAPH_STEPS_LOCK:
        return _GRAPH_STEPS.setdefault(str(device), GraphSteps())


def reset_step_graphs():
    """Forget the previous run's capture failures (called when a run starts)."""
    with _GRAPH_STEPS_LOCK:
        _GRAPH_STEPS.clear()


def graph_safe(optimizer):
    """True when every parameter group runs a fused optimizer (its step counts, if any,
    live on the device, so a captured step replays the same update)."""
    return all(g.get("fused") for g in optimizer.param_groups)


# Held-out records scored per forward pass by BestEpoch (memory, not results).
_VAL_BATCH = 8192


def fit(pack, inputs, targets, train_idx, *, epochs, batch_size, seeds, desc, recipe=None,
        optimizer=None, criterion=None, on_epoch=None, stop=None, amp=False, step_graph=None,
        checkpoint=None, poisson=False):
    """Train every member of `pack` on its row of train_idx ((K, n) int64 on the device)
    with `recipe` (engine/recipe.py; optimizer and criterion alone: Recipe(optimizer,
    criterion), a constant learning rate and no augmentation).

    inputs: (N, ...) tensor on the device; targets: (N,) on the device; the criterion maps
    (m, out) logits and (m,) targets to (m,) losses. The loss minimised is the sum over
    members of each member's mean loss; the recipe's scheduler steps after every optimizer
    step. on_epoch(epoch, (K,) mean losses) is called after every epoch; when it returns
    True the training ends there (early stopping). Raises RunError
    when a loss turns NaN or infinite, and Interrupted when the threading.Event `stop` is
    set (checked every step). amp: bf16 autocast of the forward pass (CUDA, or CPU with
    AVX512-BF16/AMX; the loss and the weights stay float32). step_graph: a callable (step,
    optimizer) -> step, CudaGraphStep or the run's GraphSteps, to run the full-size steps
    as a captured graph, used when the optimizer is graph_safe and the learning rate is
    constant (a replay would keep the captured one); the last, shorter batch of an epoch
    runs eagerly. checkpoint: a TrainCheckpoint (engine/checkpoint.py); training resumes
    from the state it holds, and offers it the state after every epoch but the last.
    poisson (DP-SGD, one member, no augmentation): each of an epoch's steps takes every
    record independently with probability batch_size / n instead of the next slice of a
    shuffle; an empty draw (probability (1 - q)^n) skips its step.
    """
    recipe = recipe or Recipe(optimizer, criterion)
    optimizer, scheduler = recipe.optimizer, recipe.scheduler
    k, n = train_idx.shape
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    steps = math.ceil(n / batch_size)
    device_type = train_idx.device.type
    total = torch.zeros(k, device=train_idx.device)

    def step(batch):
        # batch: (K, B) record indices, or (K, B, 1 + draws) with the recipe's draws
        # (augmentation, then MixUp: the partner's record index and lam)
        idx = batch if batch.dim() == 2 else batch[..., 0]
        # one cast per weight per forward: the autocast cache would only hold memory
        # (and a captured graph must not rely on it)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp,
                            cache_enabled=False):
            if batch.dim() == 2:
                logits = pack(inputs, idx)
            else:
                x, lam, partner = _batch_inputs(recipe, inputs, batch)
                logits = pack(x.flatten(0, 1),
                              torch.arange(idx.numel(), device=x.device).view(idx.shape))
        logits = logits.float().flatten(0, 1)
        losses = recipe.criterion(logits, targets[idx].flatten())
        if recipe.mixup is not None:
            lam = lam.float().flatten()
            losses = lam * losses + (1 - lam) * recipe.criterion(
                logits, targets[partner].flatten())
        member_loss = losses.view(k, -1).mean(1)
        optimizer.zero_grad(set_to_none=True)
        member_loss.sum().backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total.add_(member_loss.detach() * idx.shape[1])

    graphable = step_graph and graph_safe(optimizer) and scheduler is None
    full = step_graph(step, optimizer) if graphable else step
    pack.train()
    resumed = checkpoint.restore(pack, recipe, gens) if checkpoint else None
    first, plan = resumed or (0, _epoch_plan(gens, n, recipe))
    bar = tqdm(range(first, epochs), desc=desc, unit="epoch", leave=False, dynamic_ncols=True,
               initial=first, total=epochs)
    for epoch in bar:
        order = _order(train_idx, plan.to(train_idx.device), recipe)
        total.zero_()
        for s in range(steps):
            if stop is not None and stop.is_set():
                raise Interrupted(desc)
            batch = order[:, s * batch_size:(s + 1) * batch_size]
            if poisson:
                batch = _poisson_batch(train_idx, gens[0], batch_size)
                if not batch.shape[1]:
                    continue
            (full if batch.shape[1] == batch_size else step)(batch)
        if epoch + 1 < epochs:  # drawn while the device finishes the epoch
            plan = _epoch_plan(gens, n, recipe)
        epoch_loss = (total / n).cpu()  # one host sync per epoch
        if not torch.isfinite(epoch_loss).all():
            raise RunError(f"{desc}: training diverged at epoch {epoch + 1} "
                           f"(loss {epoch_loss.tolist()}); lower the learning rate")
        bar.set_postfix(loss=f"{epoch_loss.mean():.4f}")
        if on_epoch and on_epoch(epoch, epoch_loss) is True:
            break
        if checkpoint and epoch + 1 < epochs:
            checkpoint.save_due(pack, recipe, gens, plan, epoch + 1)
    return pack


def _batch_inputs(recipe, inputs, batch):
    """A batch's records as the recipe trains on them: batch (K, B, 1 + draws) ->
    ((K, B, ...) inputs, (K, B) MixUp lam or None, (K, B) partner indices or None)."""
    idx, draws = batch[..., 0], batch[..., 1:]
    augment, mixup, a = recipe.augment, recipe.mixup, recipe.augment_draws
    x = augment.apply(inputs, idx, draws[..., :a]) if augment else inputs[idx]
    if mixup is None:
        return x, None, None
    partner = draws[..., a]  # a record index (_order mapped it), then lam
    xp = augment.apply(inputs, partner, draws[..., :a]) if augment else inputs[partner]
    x, lam = mixup.mix(x, xp, draws[..., a:])
    return x, lam, partner


def _epoch_plan(gens, n, recipe):
    """(K, n) int64: one permutation of range(n) per member, from its own generator; with
    a recipe that draws (augmentation, MixUp), (K, n, 1 + draws): each permutation's
    record draws follow it, from the same generator."""
    rows = []
    for gen in gens:
        perm = torch.randperm(n, generator=gen)
        draws = recipe.draw(gen, n)
        rows.append(perm if draws is None else torch.cat([perm[:, None], draws], 1))
    return torch.stack(rows)


def _order(train_idx, plan, recipe):
    """The epoch's record indices (K, n), with the plan's draws beside them if it has any
    (a MixUp partner's position in the training set mapped to its record index)."""
    if plan.dim() == 2:
        return train_idx.gather(1, plan)
    out = torch.cat([train_idx.gather(1, plan[..., 0])[..., None], plan[..., 1:]], -1)
    if recipe.mixup is not None:
        col = 1 + recipe.augment_draws
        out[..., col] = train_idx.gather(1, plan[..., col])
    return out


def _poisson_batch(train_idx, gen, batch_size):
    """(1, ~batch_size) records of the one member's (1, n) train_idx, each kept with
    probability batch_size / n, drawn from its generator."""
    n = train_idx.shape[1]
    keep = torch.rand(n, generator=gen) < batch_size / n
    return train_idx[:, keep.to(train_idx.device)]


class BestEpoch:
    """Per member of a pack, the weights (CPU state_dict) and epoch with the lowest mean
    loss on its own held-out records, updated after every epoch (update). x, y: the
    held-out records' inputs and targets (y on the CPU); rows[j]: (m_j,) indices into x of
    member j's records; criterion: (m, out) logits, (m,) targets -> (m,) losses. With
    patience > 0, a member whose loss has not improved for `patience` epochs is done (its
    best is final), and `done` turns True when every member is: early stopping."""

    def __init__(self, pack, x, y, rows, criterion, patience=0):
        sizes = torch.tensor([len(r) for r in rows])
        self.pack, self.x, self.criterion = pack, x, criterion
        # (K, m) indices of each member's rows, wrapped round to the longest; the weights
        # count each row once and average per member
        m = int(sizes.max())
        cols = torch.arange(m)
        idx = torch.stack([torch.as_tensor(r)[cols % len(r)] for r in rows])
        self.idx, self.targets = idx.to(x.device), y[idx].flatten()
        self.weight = (cols[None] < sizes[:, None]).float() / sizes[:, None]
        self.patience = patience
        self.losses = [float("inf")] * len(rows)
        self.states, self.epochs = [None] * len(rows), [0] * len(rows)
        self.stopped = [False] * len(rows)
        self.last_epochs = [0] * len(rows)  # the epoch each member stopped at (or the last)

    @property
    def done(self):
        return self.patience > 0 and all(self.stopped)

    def update(self, epoch):
        """Score the held-out rows after `epoch` (0-based); returns the (K,) mean losses."""
        out = predict(self.pack, self.x, self.idx, batch_size=_VAL_BATCH)
        self.pack.train()  # fit goes on with the next epoch
        losses = self.criterion(out.flatten(0, 1), self.targets).view(self.idx.shape)
        member = (losses * self.weight).sum(1).tolist()
        states = None
        for j, loss in enumerate(member):
            if self.stopped[j]:
                continue
            self.last_epochs[j] = epoch + 1
            if loss < self.losses[j]:
                states = states or self.pack.member_state_dicts()
                self.losses[j], self.states[j], self.epochs[j] = loss, states[j], epoch + 1
            elif self.patience and epoch + 1 - self.epochs[j] >= self.patience:
                self.stopped[j] = True
        return member


@torch.inference_mode()
def predict(pack, inputs, idx, *, batch_size):
    """Members' outputs on their own records: (K, n) indices -> (K, n, out) float32 CPU
    logits, in eval mode."""
    pack.eval()
    out = [pack(inputs, idx[:, s:s + batch_size]).float()
           for s in range(0, idx.shape[1], batch_size)]
    return torch.cat(out, 1).cpu()
