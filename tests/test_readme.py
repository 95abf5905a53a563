"""The README and docs/ quote only commands that work: CI runs the README's test command
verbatim, every run_attack.py command builds a valid config, every script it names exists."""

import glob
import importlib.util
import os
import re
import shlex

import numpy as np
import pytest

from configs.config import build_cfg
from conftest import REPO

_PAGES = [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]


def _commands(path):
    """Shell commands of a page's ```bash blocks (continued lines joined) and the
    `python run_attack.py ...` cells of its tables."""
    text = open(path).read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    for line in text.splitlines():
        if line.startswith("|"):
            commands += re.findall(r"`(python3? run_attack\.py [^`]*)`", line)
    return commands


def _all_commands():
    return [(os.path.relpath(p, REPO), c) for p in _PAGES for c in _commands(p)]


def test_ci_runs_the_readme_test_command_verbatim():
    tests = [c for c in _commands(os.path.join(REPO, "README.md")) if "pytest" in c]
    assert len(tests) == 1
    ci = open(os.path.join(REPO, ".ci", "run")).read().splitlines()
    assert tests[0] in ci


def _run_attack_args(command):
    """The arguments after run_attack.py in one shell command ([] if it has none)."""
    if "[--cfg" in command:  # the synopsis, not a command
        return None
    words = shlex.split(command)
    names = [i for i, w in enumerate(words) if w.endswith("run_attack.py")]
    if not names:
        return None
    args = words[names[0] + 1:]
    return args[:-1] if args[-1:] == ["&"] else args  # a run started in the background


@pytest.mark.parametrize("page,command", [pc for pc in _all_commands()
                                          if _run_attack_args(pc[1]) is not None])
def test_every_quoted_run_builds_a_valid_config(page, command, tmp_path, monkeypatch):
    args = _run_attack_args(command)
    cfg_file = ""
    if args[:1] == ["--cfg"]:
        cfg_file, args = os.path.join(REPO, args[1]), args[2:]
    monkeypatch.chdir(tmp_path)  # data-prep files named by a command need not exist here
    for name in ("splits.npz", "attack_test.npz", "my_model.pt"):  # only their presence is checked
        open(name, "w").close()
    np.save("members.npy", np.arange(2500))  # a user's member indices, read by the checks
    rng = np.random.default_rng(0)  # a user's own data set (DATASET.NAME npz): 10 classes
    np.savez("mine.npz", x_train=rng.random((10000, 4)), y_train=np.arange(10000) % 10,
             x_test=rng.random((2000, 4)), y_test=np.arange(2000) % 10)
    build_cfg(cfg_file, args)  # merges, checks every key (assert_cfg), derives


@pytest.mark.parametrize("page,command", [pc for pc in _all_commands()
                                          if re.search(r"python3? -m ", pc[1])])
def test_every_quoted_module_exists(page, command):
    module = re.search(r"python3? -m (\S+)", command).group(1)
    if module in ("pytest", "pip"):
        return
    assert importlib.util.find_spec(module) is not None, f"{page}: {module}"
