"""DP-SGD (Abadi et al. 2016) through Opacus, a piece of the training recipe: per-record
gradients clipped to VICTIM.DP.MAX_GRAD_NORM, Gaussian noise of std NOISE_MULTIPLIER x
MAX_GRAD_NORM on their sum, batches drawn by Poisson sampling (the trainer's `poisson`
flag), and the privacy spent from Opacus's RDP accountant. The shadows train the same way
(the attacker knows the recipe), one model at a time: a pack row holds one record of
every member, so Opacus's per-row clipping would clip the members' gradients together.
"""

import math
import warnings

import torch

from utils.errors import UsageError

# Opacus's accountant (Renyi DP; its default PRV accountant needs more steps to be tight).
_ACCOUNTANT = "rdp"
# Renyi orders the spent epsilon is minimised over: Opacus's defaults (up to 63), then on
# to 255, which large epsilons (few steps, little noise) need to be tight.
_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))


def dp_enabled(cfg):
    """True when VICTIM.DP asks for DP-SGD (a noise multiplier or a target epsilon)."""
    return cfg.VICTIM.DP.NOISE_MULTIPLIER > 0 or cfg.VICTIM.DP.TARGET_EPSILON > 0


def noise_multiplier(dp, num_records, batch_size, epochs):
    """VICTIM.DP.NOISE_MULTIPLIER, or with TARGET_EPSILON > 0 the smallest that Opacus
    finds to spend at most that epsilon at DELTA over `epochs` epochs of Poisson batches
    of expected size batch_size from num_records records."""
    if dp.TARGET_EPSILON <= 0:
        return dp.NOISE_MULTIPLIER
    from opacus.accountants.utils import get_noise_multiplier

    rate = batch_size / num_records
    return get_noise_multiplier(target_epsilon=dp.TARGET_EPSILON, target_delta=dp.DELTA,
                                sample_rate=rate, steps=epochs * math.ceil(1 / rate),
                                accountant=_ACCOUNTANT)


class PrivateTraining:
    """One model and its optimizer made private: `module` (an Opacus GradSampleModule,
    which records per-record gradients) and `optimizer` (an Opacus DPOptimizer: clips,
    adds noise drawn from a generator seeded by `seed`, then steps the wrapped optimizer);
    every step is booked by an RDP accountant at sample rate batch_size / num_records."""

    def __init__(self, model, optimizer, dp, num_records, batch_size, epochs, seed):
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        # torch warns at every step that the first layer's input (the records) needs no
        # gradient when Opacus's backward hooks fire: harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        problems = ModuleValidator.validate(model, strict=False)
        if problems:
            raise UsageError(f"VICTIM.DP: {type(model).__name__} has layers DP-SGD cannot "
                             f"train per record: {str(problems[0]).splitlines()[0]}")
        self.dp, self.sample_rate = dp, batch_size / num_records
        self.sigma = noise_multiplier(dp, num_records, batch_size, epochs)
        device = next(model.parameters()).device  # the noise is drawn where the weights are
        self.module = GradSampleModule(model)
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=self.sigma,
                                     max_grad_norm=dp.MAX_GRAD_NORM,
                                     expected_batch_size=batch_size,
                                     generator=torch.Generator(device).manual_seed(int(seed)))
        self.accountant = RDPAccountant()
        self.optimizer.attach_step_hook(
            self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))

    def release(self):
        """The trained model without Opacus's hooks, and what was spent:
        {epsilon, delta, noise_multiplier, max_grad_norm, sample_rate, steps}."""
        steps = sum(n for _, _, n in self.accountant.history)
        eps = self.accountant.get_epsilon(self.dp.DELTA, alphas=_ALPHAS) if steps else 0.0
        spent = {"epsilon": float(eps),
                 "delta": self.dp.DELTA, "noise_multiplier": float(self.sigma),
                 "max_grad_norm": self.dp.MAX_GRAD_NORM, "sample_rate": self.sample_rate,
                 "steps": int(steps), "accountant": _ACCOUNTANT}
        self.module._close()
        return self.module._module, spent
