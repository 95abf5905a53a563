"""LiRA's four variants on a synthetic world where every target has its own "in" and "out"
Gaussian and each reference model trains on a random half of the targets (as
SHADOW.SAMPLING random_half): how many targets have fewer than 2 models on a side, and
TPR at 1 % and 0.1 % FPR with every target and without those.

    python -m scripts.lira_synthetic [--targets 20000] [--shadows 4 8 16]
"""

import argparse

import numpy as np

from attack_models.lira import lira_scores
from utils.metrics import tpr_at_fpr


def world(num_targets, num_shadows, seed):
    """phi (n,), truth (n,) bool, ref_phi (S, n), ref_member (S, n) bool, and the oracle's
    online and offline scores (the true Gaussians')."""
    rng = np.random.default_rng(seed)
    mu_out = rng.normal(0, 2, num_targets)
    mu_in = mu_out + np.abs(rng.normal(1.5, 1, num_targets))
    sd_out, sd_in = rng.uniform(0.5, 1.5, (2, num_targets))

    def draw(member):
        return np.where(member, rng.normal(mu_in, sd_in), rng.normal(mu_out, sd_out))

    ref_member = np.stack([rng.permutation(num_targets) < num_targets // 2
                           for _ in range(num_shadows)])
    ref_phi = np.stack([draw(m) for m in ref_member])
    truth = rng.permutation(num_targets) < num_targets // 2
    phi = draw(truth)
    z_in, z_out = (phi - mu_in) / sd_in, (phi - mu_out) / sd_out
    oracle = {True: 0.5 * (z_out ** 2 - z_in ** 2) + np.log(sd_out / sd_in), False: z_out}
    return phi, truth, ref_phi, ref_member, oracle


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", type=int, default=20000)
    p.add_argument("--shadows", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print("| shadows | variant | targets < 2 on a side | TPR@1% all | TPR@1% rest "
          "| TPR@0.1% all | TPR@0.1% rest |")
    print("|---|---|---|---|---|---|---|")
    for s in args.shadows:
        phi, truth, ref_phi, ref_member, oracle = world(args.targets, s, args.seed)
        n_in = ref_member.sum(0)
        for online in (True, False):
            figures = [tpr_at_fpr(truth, oracle[online], fpr) for fpr in (0.01, 0.001)]
            print(f"| {s} | {'online' if online else 'offline'} oracle (true Gaussians) | - "
                  f"| {figures[0]:.3f} | - | {figures[1]:.3f} | - |")
            for fixed in (False, True):
                # the sides the variant estimates: offline only "out"
                few = (s - n_in < 2) | ((n_in < 2) & online)
                scores = lira_scores(phi, ref_phi, ref_member, online, fixed)
                figures = [tpr_at_fpr(t, sc, fpr) for fpr in (0.01, 0.001)
                           for t, sc in ((truth, scores), (truth[~few], scores[~few]))]
                name = f"{'online' if online else 'offline'}{'_fixed' if fixed else ''}"
                print(f"| {s} | {name} | {few.sum()} | " + " | ".join(f"{f:.3f}" for f in figures)
                      + " |")


if __name__ == "__main__":
    main()
