"""Setup stage: run folder, config dump, logger, device, threads; the run's context."""

import os
import time
from dataclasses import dataclass, field

import torch

from engine.trainer import reset_step_graphs
from utils.distributed import DistInfo, setup_distributed
from utils.errors import UsageError
from utils.io import save_text
from utils.lock import LOCK_FILE, RunLock
from utils.logging import NullTsv, TsvLog, setup_logger
from utils.runtime import setup_device, setup_threads, versions

CONFIG_FILE = "config.yaml"
TSV_FILE = "attack.log.tsv"
# Files a run folder of this toolkit may hold; anything else marks a foreign folder.
_RUN_FILES = {CONFIG_FILE, TSV_FILE, "run.log", "splits.npz", "metrics.json", "scores.csv",
              "victim", "shadow_files", "attacker_files", "report.md", "roc.png", "hist.png",
              LOCK_FILE}


@dataclass
class RunContext:
    """What every stage needs: the frozen config, device, logs and per-stage seconds."""

    cfg: object
    device: torch.device
    out_dir: str
    log: object
    tsv: TsvLog
    dist: DistInfo = field(default_factory=DistInfo)
    timing: dict = field(default_factory=dict)
    lock: RunLock = None  # rank 0's hold on the run folder

    def path(self, *parts):
        return os.path.join(self.out_dir, *parts)

    def close(self):
        """Release the run folder (rank 0), however the run ended short of a kill."""
        if self.lock is not None:
            self.lock.release()


def _check_output_dir(out_dir):
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"OUTPUT_DIR: {out_dir} exists and is not a folder")
    if os.path.isdir(out_dir):
        foreign = set(os.listdir(out_dir)) - _RUN_FILES
        if foreign and CONFIG_FILE not in os.listdir(out_dir):
            raise UsageError(f"OUTPUT_DIR: {out_dir} holds files that are not a run's "
                             f"({', '.join(sorted(foreign)[:3])}); use an empty or new folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UsageError(f"OUTPUT_DIR: cannot create {out_dir}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise UsageError(f"OUTPUT_DIR: {out_dir} is not writable")


def setup_run(cfg, derived):
    """Create/reuse the run folder, write config.yaml, start logs; return the RunContext.
    Rank 0 holds the folder's lock from here until ctx.close(): a second process on a held
    folder is refused before it writes anything. Under torchrun only rank 0 writes the
    folder; other ranks log to stdout."""
    out_dir = cfg.OUTPUT_DIR
    device = setup_device(cfg.DEVICE, cfg.USE_GPU)
    dist = setup_distributed(device.type)
    if device.type == "cuda" and dist.world_size > 1:
        device = torch.device("cuda", dist.local_rank)
    setup_threads(cfg.NUM_THREADS)
    reset_step_graphs()  # a capture that failed in an earlier run of this process is retried
    if not dist.is_main:
        log = setup_logger(None, prefix=f"[rank {dist.rank}] ")
        return RunContext(cfg=cfg, device=device, out_dir=out_dir, log=log, tsv=NullTsv(),
                          dist=dist)
    _check_output_dir(out_dir)
    lock = RunLock(out_dir).acquire()
    try:
        save_text(os.path.join(out_dir, CONFIG_FILE), cfg.dump())
        log = setup_logger(out_dir)
    except BaseException:
        lock.release()
        raise
    if lock.stale:
        log.info("took over %s from a run that ended without releasing it (pid host start: "
                 "%s)", lock.path, lock.stale)
    if lock.unsupported:
        log.warning("the file system of %s keeps no locks (%s): a second process on "
                    "this folder would not be refused", out_dir, lock.unsupported)
    log.info("run folder %s  device %s  torch threads %d  processes %d", out_dir, device,
             torch.get_num_threads(), dist.world_size)
    for key, value in derived:
        log.info("derived %s = %s", key, value)
    log.info("versions %s", versions())
    if cfg.MIXED_PRECISION and device.type == "cpu" and not torch.cpu._is_avx512_bf16_supported():
        log.warning("MIXED_PRECISION True on a CPU without AVX512-BF16/AMX: bf16 is emulated "
                    "here and likely slower than float32")
    return RunContext(cfg=cfg, device=device, out_dir=out_dir, log=log,
                      tsv=TsvLog(os.path.join(out_dir, TSV_FILE)), dist=dist, lock=lock)


class StageTimer:
    """`with StageTimer(ctx, "victim"):` records the stage's wall seconds in ctx.timing."""

    def __init__(self, ctx, name):
        self.ctx, self.name = ctx, name

    def __enter__(self):
        self.start = time.perf_counter()
        self.ctx.log.info("== %s", self.name)

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self.start
        self.ctx.timing[self.name] = round(seconds, 3)
        if exc[0] is None:
            self.ctx.log.info("== %s done in %.1f s", self.name, seconds)
