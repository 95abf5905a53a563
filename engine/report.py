"""The run's report: report.md with the victim/shadow parity check, every method's
metrics, per-class slices, a log-log ROC plot (roc.png) and in/out score histograms
(hist.png)."""

import os

import numpy as np

from utils.io import atomic_write, save_text
from utils.metrics import roc_curve

REPORT_FILE = "report.md"
ROC_FILE = "roc.png"
HIST_FILE = "hist.png"
# Warn when the shadows' mean train-test accuracy gap differs from the victim's by more.
PARITY_TOLERANCE = 0.10

DEFINITIONS = {
    "shokri": "per-class attack model's P(member) on the posterior vector (Shokri et al. 2017)",
    "loss": "log p_y, the negative cross-entropy, minus its class threshold (Yeom et al. 2018)",
    "confidence": "p_y minus its class threshold (Song & Mittal 2021)",
    "entropy": "sum_i p_i log p_i (negative entropy) minus its class threshold "
               "(Song & Mittal 2021)",
    "modified_entropy": "negative modified entropy minus its class threshold (Song & Mittal 2021)",
    "correctness": "1 if the victim is right, minus its class threshold (Yeom et al. 2018)",
    "ml_leaks": "attack model's P(member) on the top-3 sorted posteriors (Salem et al. 2019)",
    "lira_online": "log N(phi; in) - log N(phi; out), per-target Gaussians of phi = "
                   "log(p_y/(1-p_y)) (Carlini et al. 2022)",
    "lira_online_fixed": "as lira_online with one global variance (Carlini et al. 2022)",
    "lira_offline": "log P(Z <= phi) under the per-target 'out' Gaussian (Carlini et al. 2022)",
    "lira_offline_fixed": "as lira_offline with one global variance (Carlini et al. 2022)",
    "rmia": "fraction of population z whose likelihood ratio this target's exceeds by GAMMA "
            "(offline, Zarifzadeh et al. 2024)",
    "rmia_online": "as rmia with Pr(x) the mean over all reference models, in and out "
                   "(online, Zarifzadeh et al. 2024)",
    "label_only": "share of flipped and shifted copies the victim labels right, minus its "
                  "class threshold (Choquette-Choo et al. 2021)",
}
# ROC line colours and styles, assigned in DEFINITIONS' order so that a method looks the
# same in every report: fifteen distinct colours (tab10, then black, gold, magenta, navy
# and lime), and the style cycling alongside, so curves stay apart in greyscale too.
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
            "tab:pink", "tab:gray", "tab:olive", "tab:cyan", "black", "gold", "magenta", "navy",
            "lime")
_LINESTYLES = ("-", "--", "-.", ":")


def _parity(results):
    v = results["victim"]
    sh = results["shadows"]
    tr = np.array([s["train_accuracy"] for s in sh])
    te = np.array([s["test_accuracy"] for s in sh])
    v_gap, s_gap = v["train_accuracy"] - v["test_accuracy"], float((tr - te).mean())
    lines = ["| model | train accuracy | test accuracy | gap |", "|---|---|---|---|",
             f"| victim | {v['train_accuracy']:.4f} | {v['test_accuracy']:.4f} | {v_gap:.4f} |",
             f"| shadows (mean ± std of {len(sh)}) | {tr.mean():.4f} ± {tr.std():.4f} "
             f"| {te.mean():.4f} ± {te.std():.4f} | {s_gap:.4f} |"]
    if "epsilon" in v:
        dp = v["dp"]
        lines += ["", f"The victim was trained with DP-SGD: ε = {v['epsilon']:.3f} at "
                      f"δ = {dp['delta']:g} ({dp['accountant']} accountant; noise multiplier "
                      f"{dp['noise_multiplier']:.3f}, clipping norm {dp['max_grad_norm']:g}, "
                      f"{dp['steps']} steps at sample rate {dp['sample_rate']:.4f}). No "
                      f"method's ε lower bound can honestly exceed it."]
    if abs(s_gap - v_gap) > PARITY_TOLERANCE:
        lines += ["", f"**Warning:** the shadows' train-test gap ({s_gap:.3f}) is far from the "
                      f"victim's ({v_gap:.3f}); they do not imitate it, and attacks fitted on "
                      f"them may be miscalibrated."]
    return lines


def _epsilon_cell(o):
    """The epsilon lower bound and the threshold that proves it ("-" when not computed)."""
    if "epsilon_lower_bound" not in o:
        return "-"
    t = o["epsilon_threshold"]
    return f"{o['epsilon_lower_bound']:.3f}" + ("" if t is None else f" (score >= {t:.4g})")


def _methods_table(methods):
    lines = ["| method | AUC [95% CI] | balanced accuracy | advantage | TPR@0.1% FPR "
             "| TPR@1% FPR | ε lower bound |", "|---|---|---|---|---|---|---|"]
    for name, m in methods.items():
        o = m["overall"]
        lo, hi = o["auc_ci95"]
        lines.append(f"| {name} | {o['auc']:.4f} [{lo:.4f}, {hi:.4f}] "
                     f"| {o['balanced_accuracy']:.4f} | {o['advantage']:.4f} "
                     f"| {o['tpr_at_fpr']['0.001']:.4f} | {o['tpr_at_fpr']['0.01']:.4f} "
                     f"| {_epsilon_cell(o)} |")
    return lines


def _per_class_table(methods):
    names = list(methods)
    classes = sorted(next(iter(methods.values()))["per_class"], key=int)
    lines = ["| class | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for k in classes:
        lines.append(f"| {k} | " + " | ".join(f"{methods[n]['per_class'][k]['auc']:.4f}"
                                              for n in names) + " |")
    return lines


def roc_style(name):
    """matplotlib keyword arguments (color, linestyle) of a method's ROC curve."""
    i = list(DEFINITIONS).index(name)
    return {"color": _COLOURS[i % len(_COLOURS)], "linestyle": _LINESTYLES[i % len(_LINESTYLES)]}


def _save_figure(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def _plots(out_dir, table, methods):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    membership = np.asarray(table["membership"]).astype(bool)
    fig, ax = plt.subplots(figsize=(6, 6))
    for name in methods:
        s = np.asarray(table[f"score_{name}"], np.float64)
        keep = ~np.isnan(s)
        fpr, tpr = roc_curve(membership[keep], s[keep])
        ax.plot(np.maximum(fpr, 1e-5), np.maximum(tpr, 1e-5), **roc_style(name),
                label=f"{name} (AUC {methods[name]['overall']['auc']:.3f})")
    ax.plot([1e-5, 1], [1e-5, 1], "k:", lw=1)
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1),
           xlabel="false positive rate", ylabel="true positive rate", title="ROC (log-log)")
    ax.legend(fontsize=7, loc="lower right")
    _save_figure(fig, os.path.join(out_dir, ROC_FILE))
    plt.close(fig)

    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, methods):
        s = np.asarray(table[f"score_{name}"], np.float64)
        keep = ~np.isnan(s)
        finite = keep & np.isfinite(s)
        lo, hi = np.percentile(s[finite], [0.5, 99.5]) if finite.any() else (0.0, 1.0)
        s = np.clip(s, lo, hi)  # long tails (LiRA) would hide the bulk
        bins = np.linspace(lo, hi + 1e-12, 41)
        ax.hist(s[finite & membership], bins=bins, alpha=0.6, label="in", density=True)
        ax.hist(s[finite & ~membership], bins=bins, alpha=0.6, label="out", density=True)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, os.path.join(out_dir, HIST_FILE))
    plt.close(fig)


def write_report(out_dir, results, table, cfg):
    """Write report.md, roc.png and hist.png into out_dir; return the markdown text."""
    methods = results["methods"]
    lines = ["# Membership inference report", "",
             f"Run folder `{out_dir}`; shadows sampled `{cfg.SHADOW.SAMPLING}`; "
             f"{results['overall']['num_in']} members vs {results['overall']['num_out']} "
             f"non-members evaluated; records routed by `{cfg.ATTACKER.TEST.ROUTING}`. "
             f"Every score is oriented so that higher = more likely a member.", "",
             "## Victim and shadows", "", *_parity(results), "",
             "## Methods", "", *_methods_table(methods), "",
             "AUC intervals: stratified bootstrap, "
             f"{cfg.ATTACKER.TEST.BOOTSTRAP} resamples. ε lower bound: the largest ε that "
             f"the method's ROC proves at δ = {cfg.ATTACKER.AUDIT.DELTA:g} (one-sided "
             f"Clopper-Pearson bounds at {cfg.ATTACKER.AUDIT.CONFIDENCE:g} on TPR and FPR), "
             "with the score threshold of the test that proves it.", "",
             "## Per-class AUC (records grouped by the class that routed them)", "",
             *_per_class_table(methods), "",
             "## ROC curves", "", f"![ROC curves, log-log]({ROC_FILE})", "",
             "## Scores of members (in) and non-members (out)", "",
             f"![score histograms]({HIST_FILE})", "",
             "## Score definitions", ""]
    lines += [f"- `{name}`: {DEFINITIONS[name]}." for name in methods]
    _plots(out_dir, table, methods)
    text = "\n".join(lines) + "\n"
    save_text(os.path.join(out_dir, REPORT_FILE), text)
    return text
