"""In-flight checkpoints: the state of a training in progress (the pack's stacked weights
and buffers, the optimizer's and learning-rate scheduler's state, every member's shuffle
generator and next epoch's shuffles and augmentation draws, the epochs done), saved at
epoch ends so that a killed run resumes inside the training and ends with the weights an
uninterrupted one gets."""

import logging
import os
import time

from utils.errors import RunError
from utils.io import load_checkpoint, save_checkpoint


class TrainCheckpoint:
    """fit()'s state in `path`: saved at the end of an epoch once `minutes` have passed since
    the last save (or the start; 0: never saved), restored by fit() when the file holds the
    same `tag` (a digest of what decides the training: settings and members)."""

    def __init__(self, path, minutes, tag, name):
        self.path, self.seconds, self.tag, self.name = path, minutes * 60.0, tag, name
        self.last = time.monotonic()

    def restore(self, pack, recipe, gens):
        """Load the saved state into pack, recipe (engine/recipe.py: optimizer, scheduler)
        and the (K,) generators; return (epochs done, the next epoch's plan: (K, n) int64
        shuffles, or (K, n, 1 + draws) with augmentation or MixUp draws), or None when
        there is none to use."""
        if not os.path.exists(self.path):
            return None
        log = logging.getLogger("mia")
        try:
            state = load_checkpoint(self.path)
        except RunError as e:
            log.warning("WARNING: %s; %s trains from the start", e, self.name)
            return None
        if state.get("tag") != self.tag:
            log.info("%s was saved with other settings or members; %s trains from the start",
                     self.path, self.name)
            return None
        pack.load_state_dict(state["state_dict"])
        recipe.load_state_dict(state)
        for gen, gen_state in zip(gens, state["generators"]):
            gen.set_state(gen_state)
        log.info("%s: resuming after epoch %d from %s", self.name, state["epoch"], self.path)
        return state["epoch"], state["perms"]

    def save_due(self, pack, recipe, gens, plan, epoch):
        """Save the state after `epoch` epochs, with the next epoch's plan (shuffles and
        draws), when the interval has passed."""
        if self.seconds <= 0 or time.monotonic() - self.last < self.seconds:
            return
        save_checkpoint(self.path, pack.state_dict(), **recipe.state_dict(),
                        generators=[g.get_state() for g in gens], perms=plan, epoch=epoch,
                        tag=self.tag)
        self.last = time.monotonic()

    def remove(self):
        """Delete the file: the training it resumes has been committed."""
        remove_file(self.path)


def remove_file(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
