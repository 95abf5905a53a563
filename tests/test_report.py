"""The report's ROC plot: one curve per method, each with its own colour and line style."""

import numpy as np
import pytest

from configs.defaults import get_cfg
from engine import report
from engine.report import DEFINITIONS, write_report
from utils.metrics import membership_metrics


def _results_and_table(names, n=400, seed=0):
    rng = np.random.default_rng(seed)
    member = rng.integers(0, 2, n)
    table = {"membership": member}
    methods = {}
    for i, name in enumerate(names):
        scores = rng.random(n) + 0.05 * (i + 1) * member
        table[f"score_{name}"] = scores
        overall = membership_metrics(member, scores, 0.5)
        overall["auc_ci95"] = [overall["auc"], overall["auc"]]
        methods[name] = {"overall": overall, "per_class": {"0": overall}}
    results = {"overall": methods[names[0]]["overall"], "methods": methods,
               "victim": {"train_accuracy": 1.0, "test_accuracy": 0.5},
               "shadows": [{"train_accuracy": 1.0, "test_accuracy": 0.5}]}
    return results, table


@pytest.fixture
def saved_figures(monkeypatch):
    """The matplotlib figures write_report saves, in order (roc, then histograms)."""
    figures = []
    save = report._save_figure

    def keep(fig, path):
        figures.append(fig)
        save(fig, path)

    monkeypatch.setattr(report, "_save_figure", keep)
    return figures


def test_every_method_gets_its_own_roc_colour_and_line_style(tmp_path, saved_figures):
    from engine.methods import METHODS

    names = list(METHODS)  # every method in one report
    results, table = _results_and_table(names)
    write_report(str(tmp_path), results, table, get_cfg())
    roc = saved_figures[0].axes[0]
    curves = [line for line in roc.get_lines() if not line.get_label().startswith("_")]
    assert [c.get_label().split(" (")[0] for c in curves] == names
    colours = [c.get_color() for c in curves]
    assert len(set(colours)) == len(names)  # shokri and rmia were both blue
    styles = {c.get_label().split(" (")[0]: c.get_linestyle() for c in curves}
    assert styles["shokri"] != styles["rmia"]


def test_roc_styles_differ_across_all_known_methods():
    pairs = {tuple(report.roc_style(n).values()) for n in DEFINITIONS}
    assert len(pairs) == len(DEFINITIONS)
