"""Build a run's config: merge a YAML preset and KEY VALUE pairs, check, derive.

Every error is a UsageError whose one line names the key, the bad value and what is
allowed.
"""

import difflib
import os
import re
import time
from ast import literal_eval

import yaml

from attack_models import ATTACK_MODELS, INPUT_SCALINGS
from attack_models.label_only import max_queries
from attack_models.methods import METHOD_NAMES, NEEDS_RANDOM_HALF, methods_for_output
from attack_models.queries import QUERY_VIEWS
from configs.defaults import get_cfg
from datasets import get_dataset_info, reads_path
from datasets.members import load_members
from shadow_models.sampling import filler_size
from utils.errors import UsageError
from utils.fingerprint import flatten
from utils.optim_names import AUGMENT_NAMES, CRITERION_NAMES, OPTIMIZER_NAMES, SCHEDULER_NAMES
from victims import MODELS, check_model, is_import_path
from victims.release import OUTPUTS

# Shadow keys that default to the victim's value: shadow key -> (victim key, "as victim" value).
_FOLLOW_VICTIM = {
    "SHADOW.MODEL.ARCH": ("VICTIM.MODEL.ARCH", ""),
    "SHADOW.OPTIMIZER.NAME": ("VICTIM.OPTIMIZER.NAME", ""),
    "SHADOW.OPTIMIZER.ALPHA": ("VICTIM.OPTIMIZER.ALPHA", -1.0),
    "SHADOW.OPTIMIZER.GAMMA": ("VICTIM.OPTIMIZER.GAMMA", -1.0),
    "SHADOW.OPTIMIZER.BETAS": ("VICTIM.OPTIMIZER.BETAS", []),
    "SHADOW.OPTIMIZER.MOMENTUM": ("VICTIM.OPTIMIZER.MOMENTUM", -1.0),
    "SHADOW.OPTIMIZER.NESTEROV": ("VICTIM.OPTIMIZER.NESTEROV", ""),
    "SHADOW.OPTIMIZER.SCHEDULER": ("VICTIM.OPTIMIZER.SCHEDULER", ""),
    "SHADOW.OPTIMIZER.WARMUP_EPOCHS": ("VICTIM.OPTIMIZER.WARMUP_EPOCHS", -1.0),
    "SHADOW.OPTIMIZER.MILESTONES": ("VICTIM.OPTIMIZER.MILESTONES", []),
    "SHADOW.OPTIMIZER.LR_DECAY": ("VICTIM.OPTIMIZER.LR_DECAY", -1.0),
    "SHADOW.OPTIMIZER.NORM_BIAS_LR_SCALE": ("VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE", -1.0),
    "SHADOW.CRITERION": ("VICTIM.CRITERION", ""),
    "SHADOW.TRAIN.NUM_EPOCHS": ("VICTIM.TRAIN.NUM_EPOCHS", -1),
    "SHADOW.TRAIN.BATCH_SIZE": ("VICTIM.TRAIN.BATCH_SIZE", -1),
    "SHADOW.TRAIN.SET_SIZE": ("VICTIM.TRAIN.SET_SIZE", -1),
    "SHADOW.TRAIN.LABEL_SMOOTHING": ("VICTIM.TRAIN.LABEL_SMOOTHING", -1.0),
    "SHADOW.TRAIN.AUGMENT": ("VICTIM.TRAIN.AUGMENT", ""),
    "SHADOW.TRAIN.MIXUP_ALPHA": ("VICTIM.TRAIN.MIXUP_ALPHA", -1.0),
    "SHADOW.TRAIN.EARLY_STOP_PATIENCE": ("VICTIM.TRAIN.EARLY_STOP_PATIENCE", -1),
    "SHADOW.TRAIN.EARLY_STOP_RECORDS": ("VICTIM.TRAIN.EARLY_STOP_RECORDS", -1),
}
# Shadow architecture options that follow the victim's only when the architecture is the
# victim's (else the architecture's own): shadow key -> (victim key, "as victim" value).
_FOLLOW_VICTIM_ARCH = {
    "SHADOW.MODEL.LAYER_DIMS": ("VICTIM.MODEL.LAYER_DIMS", []),
    "SHADOW.MODEL.DEPTH": ("VICTIM.MODEL.DEPTH", -1),
    "SHADOW.MODEL.WIDTH": ("VICTIM.MODEL.WIDTH", -1),
    "SHADOW.MODEL.INIT": ("VICTIM.MODEL.INIT", ""),
}
# Keys naming the run's data set again (the original toolkit's); empty: DATASET.NAME.
_DATASET_KEYS = ("SHADOW.TRAIN.DATASET", "ATTACKER.TRAIN.DATASET", "ATTACKER.TEST.DATASET")
_ROUTINGS = ("label", "argmax")
_SAMPLINGS = ("disjoint", "random_half")
_LIRA_ESTIMATORS = ("mean", "median")
_INITS = ("default", "airbench")  # MODEL.INIT
# Largest learning rate accepted: far past any useful one, well inside float32.
_MAX_LR = 1e6
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg, key, value):
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[last] = value


def _parse(text):
    """A command-line value as a Python literal when it is one, else the string; a list
    of bare words, [shokri,loss] (as YAML takes it), is a list of each item parsed so."""
    if not isinstance(text, str):
        return text
    try:
        return literal_eval(text)
    except (ValueError, SyntaxError):
        inner = text.strip()
        if inner[:1] == "[" and inner[-1:] == "]" and not any(c in inner[1:-1] for c in "[]"):
            return [_parse(item.strip()) for item in inner[1:-1].split(",") if item.strip()]
        return {"true": True, "false": False}.get(text.lower(), text)


def _join_lists(opts):
    """Command-line words with a list written with spaces, `[shokri, loss]`, rejoined
    into one value (the shell splits it into `[shokri,` and `loss]`)."""
    out, i = [], 0
    while i < len(opts):
        word = opts[i]
        if word.startswith("[") and "]" not in word:
            j = next((j for j in range(i + 1, len(opts)) if "]" in opts[j]), None)
            if j is not None:
                word, i = " ".join(opts[i:j + 1]), j
        out.append(word)
        i += 1
    return out


def _coerce(key, value, default):
    """`value` in the type of `default`; ints become floats on purpose; a shadow key that
    follows a True/False victim key (empty: as VICTIM) takes True or False."""
    victim_key = _FOLLOW_VICTIM.get(key, ("",))[0]
    if victim_key and isinstance(_get(get_cfg(), victim_key), bool) and isinstance(value, bool):
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    raise UsageError(f"{key}: expected {type(default).__name__} (e.g. {default!r}), "
                     f"got {value!r} ({type(value).__name__})")


def merge_pairs(cfg, pairs, source):
    """Set each (key, value) in cfg, checking the key exists and the type fits."""
    valid = list(flatten(cfg))
    for key, value in pairs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"unknown config key '{key}' ({source}){hint}")
        _set(cfg, key, _coerce(key, _parse(value), _get(cfg, key)))


def load_yaml(path):
    try:
        with open(path) as f:
            tree = yaml.safe_load(f) or {}
    except OSError as e:
        raise UsageError(f"--cfg: cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise UsageError(f"--cfg: {path} is not valid YAML{at}") from None
    if not isinstance(tree, dict):
        raise UsageError(f"--cfg: {path} must hold a mapping of config keys")
    return flatten(tree)


def build_cfg(cfg_file="", opts=()):
    """Defaults, then the YAML file, then KEY VALUE pairs; checked and derived, unfrozen.
    Returns (cfg, derived) where derived lists (key, value) set by infer_cfg."""
    opts = _join_lists(list(opts))
    if len(opts) % 2:
        raise UsageError(f"overrides come in KEY VALUE pairs; '{opts[-1]}' has no value")
    cfg = get_cfg()
    if cfg_file:
        merge_pairs(cfg, load_yaml(cfg_file).items(), cfg_file)
    merge_pairs(cfg, zip(opts[0::2], opts[1::2]), "command line")
    assert_cfg(cfg)
    derived = infer_cfg(cfg)
    return cfg, derived


def _check(ok, key, value, allowed):
    if not ok:
        raise UsageError(f"{key}: bad value {value!r}; allowed: {allowed}")


def _check_name(key, value, registry, follow=False):
    names = sorted(registry)
    _check(value in registry or (follow and value == ""), key, value,
           ", ".join(names) + (" (or empty: as VICTIM)" if follow else ""))


def _check_arch(key, value, follow=False):
    """A registry name, or a `package.module:Class` path (checked by syntax only)."""
    _check(value in MODELS or is_import_path(value) or (follow and value == ""), key, value,
           ", ".join(sorted(MODELS)) + ", or package.module:Class (a user's nn.Module)"
           + (" (or empty: as VICTIM)" if follow else ""))


def _check_positive(cfg, keys, follow_ok=False, integer=True, strict=True):
    for key in keys:
        v = _get(cfg, key)
        sentinel = follow_ok and key in _FOLLOW_VICTIM and v == _FOLLOW_VICTIM[key][1]
        good = v > 0 if strict else v >= 0
        kind = "an integer" if integer else "a number"
        _check(sentinel or good, key, v,
               f"{kind} {'>' if strict else '>='} 0" + (" (or -1: as VICTIM)" if follow_ok else ""))


def _check_optimizer(cfg, prefix, follow):
    _check_name(f"{prefix}.NAME", _get(cfg, f"{prefix}.NAME"), OPTIMIZER_NAMES, follow)
    _check_positive(cfg, [f"{prefix}.ALPHA"], follow, integer=False)
    alpha = _get(cfg, f"{prefix}.ALPHA")
    _check(alpha <= _MAX_LR, f"{prefix}.ALPHA", alpha, f"a learning rate in (0, {_MAX_LR:g}]")
    _check_positive(cfg, [f"{prefix}.GAMMA", f"{prefix}.MOMENTUM"], follow, integer=False,
                    strict=False)
    betas = _get(cfg, f"{prefix}.BETAS")
    ok = (follow and betas == []) or (
        len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas))
    _check(ok, f"{prefix}.BETAS", betas, "two numbers in [0, 1)")


def _effective(cfg, key):
    """The value a key takes after infer_cfg: a shadow key at its "as victim" value gives
    the victim's."""
    value = _get(cfg, key)
    if key in _FOLLOW_VICTIM and value == _FOLLOW_VICTIM[key][1]:
        return _get(cfg, _FOLLOW_VICTIM[key][0])
    return value


def _check_recipe(cfg, node, follow):
    """The training-recipe keys of VICTIM or SHADOW (engine/recipe.py)."""
    as_victim = " (or empty: as VICTIM)" if follow else ""
    key = f"{node}.OPTIMIZER.NESTEROV"
    _check(_get(cfg, key) in ((True, False, "") if follow else (True, False)), key,
           _get(cfg, key), "True or False" + as_victim)
    _check(not _effective(cfg, key) or (_effective(cfg, f"{node}.OPTIMIZER.NAME") == "sgd"
                                        and _effective(cfg, f"{node}.OPTIMIZER.MOMENTUM") > 0),
           key, True, f"False unless {node}.OPTIMIZER.NAME is sgd and MOMENTUM > 0")
    _check_schedule(cfg, node, follow)
    for key, low, high, allowed in (
            (f"{node}.TRAIN.LABEL_SMOOTHING", 0, 1 - 1e-12, "a number in [0, 1)"),
            (f"{node}.TRAIN.MIXUP_ALPHA", 0, float("inf"), "a number >= 0 (0: no MixUp)"),
            (f"{node}.OPTIMIZER.NORM_BIAS_LR_SCALE", 1e-12, _MAX_LR, "a factor > 0")):
        _check_range(cfg, key, low, high, allowed, follow)
    key = f"{node}.TRAIN.AUGMENT"
    _check_name(key, _get(cfg, key), AUGMENT_NAMES, follow)


def _check_range(cfg, key, low, high, allowed, follow):
    value = _get(cfg, key)
    sentinel = follow and value == _FOLLOW_VICTIM[key][1]
    _check(sentinel or low <= value <= high, key, value,
           allowed + (" (or -1: as VICTIM)" if follow else ""))


def _check_schedule(cfg, node, follow):
    """The learning-rate schedule keys of VICTIM, SHADOW or ATTACKER (engine/recipe.py)."""
    key = f"{node}.OPTIMIZER.SCHEDULER"
    _check_name(key, _get(cfg, key), SCHEDULER_NAMES, follow)
    epochs = _effective(cfg, f"{node}.TRAIN.NUM_EPOCHS")
    for key, low, high, allowed in (
            (f"{node}.OPTIMIZER.WARMUP_EPOCHS", 0, epochs, f"epochs in [0, {epochs}]"),
            (f"{node}.OPTIMIZER.LR_DECAY", 1e-12, 1, "a factor in (0, 1]")):
        _check_range(cfg, key, low, high, allowed, follow)
    key = f"{node}.OPTIMIZER.MILESTONES"
    milestones = _get(cfg, key)
    _check(all(isinstance(m, int) and 0 < m < epochs for m in milestones)
           and len(set(milestones)) == len(milestones), key, milestones,
           f"distinct epochs in 1 .. {epochs - 1}" + (" (or []: as VICTIM)" if follow else ""))
    multistep = _effective(cfg, f"{node}.OPTIMIZER.SCHEDULER") == "multistep"
    _check(not multistep or _effective(cfg, key), key, _effective(cfg, key),
           f"at least one epoch for {node}.OPTIMIZER.SCHEDULER multistep")


def dataset_info(cfg):
    """The DatasetInfo of DATASET.NAME (for npz, read from the headers and labels of the
    file at DATASET.PATH) and its (train, test) record counts."""
    name, path = cfg.DATASET.NAME, cfg.DATASET.PATH
    _check(reads_path(name) or not path, "DATASET.PATH", path,
           "empty (only DATASET.NAME npz reads a file there)")
    info = get_dataset_info(name, path)
    fraction = cfg.DATASET.TEST_FRACTION
    return info, info.split_sizes(fraction if fraction != -1 else info.test_fraction)


def _check_dataset(cfg, info):
    """The keys that must agree with the data set: its name, classes, record shape,
    normalisation and test split."""
    name = cfg.DATASET.NAME
    for key in _DATASET_KEYS:
        _check(_get(cfg, key) in ("", name), key, _get(cfg, key),
               f"the run's data set DATASET.NAME={name!r}, or empty")
    _check(cfg.VICTIM.NUM_CLASSES in (-1, info.num_classes), "VICTIM.NUM_CLASSES",
           cfg.VICTIM.NUM_CLASSES, f"{info.num_classes} for {name} (or -1: the data set's)")
    width, unit = info.shape[0], "channel" if info.is_image else "feature"
    _check(cfg.VICTIM.IN_FEATURES in (-1, width), "VICTIM.IN_FEATURES", cfg.VICTIM.IN_FEATURES,
           f"{width} for {name}, one per input {unit} (or -1: the data set's)")
    _check(len(cfg.DATASET.MEAN) in (0, width), "DATASET.MEAN", cfg.DATASET.MEAN,
           f"{width} numbers, one per {unit} of {name} (or []: the data set's)")
    _check(len(cfg.DATASET.STD) in (0, width) and all(s > 0 for s in cfg.DATASET.STD),
           "DATASET.STD", cfg.DATASET.STD,
           f"{width} numbers > 0, one per {unit} of {name} (or []: the data set's)")
    fraction = cfg.DATASET.TEST_FRACTION
    if info.num_test:
        _check(fraction == -1, "DATASET.TEST_FRACTION", fraction,
               f"-1 ({name} comes with its own test split)")
    else:
        _check(fraction == -1 or 0 < fraction < 1, "DATASET.TEST_FRACTION", fraction,
               f"a fraction in (0, 1), or -1: {info.test_fraction} for {name}")
    for node in ("VICTIM", "SHADOW"):
        arch = cfg[node].MODEL.ARCH or cfg.VICTIM.MODEL.ARCH
        dims = cfg[node].MODEL.LAYER_DIMS
        _check(all(isinstance(d, int) and d > 0 for d in dims), f"{node}.MODEL.LAYER_DIMS", dims,
               "a list of positive integers (hidden layer widths), or []")
        keys = [f"{node}.MODEL.{k}" for k in ("LAYER_DIMS", "DEPTH", "WIDTH", "INIT")]
        options = [_get(cfg, key) for key in keys]
        as_victim = node == "SHADOW" and arch == cfg.VICTIM.MODEL.ARCH
        if as_victim:
            options = [_get(cfg, _FOLLOW_VICTIM_ARCH[key][0])
                       if _get(cfg, key) == _FOLLOW_VICTIM_ARCH[key][1] else _get(cfg, key)
                       for key in keys]
        init = options.pop()
        _check(init in _INITS + (("",) if node == "SHADOW" else ()), keys[-1], init,
               ", ".join(_INITS) + (" (or empty: as VICTIM)" if as_victim else ""))
        _check(init != "airbench" or arch == "fastnet", keys[-1], init,
               f"default for {arch} (airbench is fastnet's initialisation)")
        # a user's module:Class is imported by the builder, not by the config checks
        problem = "" if is_import_path(arch) else check_model(arch, info.shape, *options)
        if problem:
            raise UsageError(f"{node}.{problem}")
        augment = _effective(cfg, f"{node}.TRAIN.AUGMENT")
        _check(augment in ("", "none") or info.is_image, f"{node}.TRAIN.AUGMENT", augment,
               f"none for {name}'s feature vectors (flips and crops are for images)")


def _members_count(cfg, num_train):
    """How many train records VICTIM.MEMBERS lists (read and checked), or 0 without it."""
    path = cfg.VICTIM.MEMBERS
    return len(load_members(path, num_train)) if path else 0


def _check_members(cfg, num_train):
    """With VICTIM.MEMBERS, the victim's pool and set are its records: the size keys may
    only keep their default or say the same. Returns the member count (0: no file)."""
    count = _members_count(cfg, num_train)
    if not count:
        return 0
    defaults = get_cfg()
    for key in ("VICTIM.TRAIN.SET_SIZE", "DATASET.VICTIM_POOL_SIZE"):
        value = _get(cfg, key)
        _check(value in (_get(defaults, key), count), key, value,
               f"{count}, the records of VICTIM.MEMBERS (or the default, which follows it)")
    _check(not cfg.SHADOW.TRAIN.DATA_PATH, "SHADOW.TRAIN.DATA_PATH", cfg.SHADOW.TRAIN.DATA_PATH,
           "empty while VICTIM.MEMBERS is set (the shadow pools are the other train records)")
    return count


def _check_sizes(cfg, num_train, num_test, members=0):
    """Pool, set and evaluation sizes against the data set's train and test splits;
    members: the count of VICTIM.MEMBERS (0: none), which then sizes the victim."""
    pool, train = members or cfg.DATASET.VICTIM_POOL_SIZE, num_train
    victim_size = members or cfg.VICTIM.TRAIN.SET_SIZE
    _check(pool < train - 1, "DATASET.VICTIM_POOL_SIZE", pool,
           f"1 .. {train - 2} (the rest of {cfg.DATASET.NAME}'s {train} train records is the "
           f"shadow pool)")
    _check(victim_size <= pool, "VICTIM.TRAIN.SET_SIZE", victim_size,
           f"1 .. DATASET.VICTIM_POOL_SIZE={pool}")
    half = (train - pool) // 2
    shadow_size = cfg.SHADOW.TRAIN.SET_SIZE
    if shadow_size == -1:
        shadow_size = victim_size
    if members and shadow_size > half and cfg.SHADOW.SAMPLING == "disjoint":
        raise UsageError(
            f"VICTIM.MEMBERS: its {members} records leave {train - pool} of {cfg.DATASET.NAME}'s "
            f"{train} train records for the shadow pools, whose halves ({half}) cannot give "
            f"each shadow {shadow_size} records (SHADOW.TRAIN.SET_SIZE"
            + (f", as the victim's); use at most {train // 3} members, or set it <= {half}"
               if cfg.SHADOW.TRAIN.SET_SIZE == -1 else f"); set it <= {half}"))
    if cfg.SHADOW.SAMPLING == "disjoint":
        _check(shadow_size <= half, "SHADOW.TRAIN.SET_SIZE", cfg.SHADOW.TRAIN.SET_SIZE,
               f"1 .. {half} (half of the {train - pool}-record shadow pool)")
    elif not cfg.ATTACKER.TEST.DATA_PATH:  # (with one, the run checks: reference_records)
        # a population of the evaluated records and 2 x SET_SIZE - targets shadow-pool
        # records (filler_size), which must leave one of the pool at least
        n_in = victim_size
        targets = 2 * min(n_in, num_test) if cfg.ATTACKER.TEST.BALANCED else n_in + num_test
        most = (train - pool - 1 + targets) // 2
        _check(shadow_size <= most, "SHADOW.TRAIN.SET_SIZE", cfg.SHADOW.TRAIN.SET_SIZE,
               f"1 .. {most} (random_half: each shadow trains on half of a population of "
               f"the {targets} evaluated records plus shadow-pool records, which must leave "
               f"one of the {train - pool} shadow-pool records at least for "
               f"ATTACKER.RMIA.NUM_POPULATION)")
        filler, population = filler_size(targets, shadow_size), cfg.ATTACKER.RMIA.NUM_POPULATION
        _check(filler + population <= train - pool, "ATTACKER.RMIA.NUM_POPULATION", population,
               f"1 .. {train - pool - filler} (random_half shadows take {filler} of the "
               f"{train - pool}-record shadow pool besides the {targets} evaluated records)")
    # early stopping's held-out records: from the pool outside the model's training set
    for node, spare, where in (
            ("VICTIM", pool - victim_size, f"DATASET.VICTIM_POOL_SIZE {pool} less "
                                           f"VICTIM.TRAIN.SET_SIZE {victim_size}"),
            ("SHADOW", half - shadow_size, f"the shadow pool half of {half} less "
                                           f"SHADOW.TRAIN.SET_SIZE {shadow_size}")):
        if _effective(cfg, f"{node}.TRAIN.EARLY_STOP_PATIENCE") > 0:
            _check(node == "VICTIM" or cfg.SHADOW.SAMPLING == "disjoint",
                   "SHADOW.TRAIN.EARLY_STOP_PATIENCE", _effective(
                       cfg, "SHADOW.TRAIN.EARLY_STOP_PATIENCE"),
                   "0 with SHADOW.SAMPLING random_half (every pool record is a target or "
                   "trained on: none is left to hold out)")
            key = f"{node}.TRAIN.EARLY_STOP_RECORDS"
            _check(_effective(cfg, key) <= spare, key, _effective(cfg, key),
                   f"1 .. {spare} (held-out records come from {where})" if spare > 0 else
                   f"none: {where} leaves no record to hold out")


def assert_cfg(cfg):
    """Check every key; raise UsageError on the first bad one. Changes nothing."""
    info, (num_train, num_test) = dataset_info(cfg)
    _check_arch("VICTIM.MODEL.ARCH", cfg.VICTIM.MODEL.ARCH)
    _check_arch("SHADOW.MODEL.ARCH", cfg.SHADOW.MODEL.ARCH, follow=True)
    _check_dataset(cfg, info)
    _check_name("ATTACKER.MODEL.ARCH", cfg.ATTACKER.MODEL.ARCH, ATTACK_MODELS)
    _check_optimizer(cfg, "VICTIM.OPTIMIZER", follow=False)
    _check_optimizer(cfg, "SHADOW.OPTIMIZER", follow=True)
    _check_optimizer(cfg, "ATTACKER.OPTIMIZER", follow=False)
    _check_name("VICTIM.CRITERION", cfg.VICTIM.CRITERION, CRITERION_NAMES["classifier"])
    _check_name("SHADOW.CRITERION", cfg.SHADOW.CRITERION, CRITERION_NAMES["classifier"],
                follow=True)
    _check_name("ATTACKER.CRITERION", cfg.ATTACKER.CRITERION, CRITERION_NAMES["attack"])

    _check_positive(cfg, ["VICTIM.TRAIN.NUM_EPOCHS", "VICTIM.TRAIN.BATCH_SIZE",
                          "VICTIM.TRAIN.SET_SIZE", "DATASET.VICTIM_POOL_SIZE",
                          "SHADOW.NUM_MODELS", "ATTACKER.TRAIN.NUM_EPOCHS",
                          "ATTACKER.TRAIN.BATCH_SIZE", "ATTACKER.TEST.BATCH_SIZE",
                          "ATTACKER.MODEL.ENSEMBLE", "VICTIM.TRAIN.EARLY_STOP_RECORDS"])
    _check_positive(cfg, ["VICTIM.TRAIN.EARLY_STOP_PATIENCE"], strict=False)
    _check_positive(cfg, ["SHADOW.TRAIN.EARLY_STOP_PATIENCE"], follow_ok=True, strict=False)
    _check_positive(cfg, ["SHADOW.TRAIN.NUM_EPOCHS", "SHADOW.TRAIN.BATCH_SIZE",
                          "SHADOW.TRAIN.SET_SIZE", "SHADOW.TRAIN.EARLY_STOP_RECORDS"],
                    follow_ok=True)
    _check_recipe(cfg, "VICTIM", follow=False)
    _check_recipe(cfg, "SHADOW", follow=True)
    _check_schedule(cfg, "ATTACKER", follow=False)
    _check_positive(cfg, ["ATTACKER.TRAIN.NUM_STEPS"], strict=False)
    _check_positive(cfg, ["SHADOW.TRAIN.MODELS_PER_PACK", "NUM_THREADS", "RNG_SEED",
                          "USE_GPU", "NUM_WORKERS"], strict=False)
    for key in ("VICTIM.CHECKPOINT", "VICTIM.MEMBERS"):
        path = _get(cfg, key)
        _check(not path or os.path.isfile(path), key, path, "an existing file, or empty")
    _check_sizes(cfg, num_train, num_test, _check_members(cfg, num_train))
    _check_positive(cfg, ["VICTIM.TRAIN.CHECKPOINT_MINUTES", "SHADOW.TRAIN.CHECKPOINT_MINUTES"],
                    integer=False, strict=False)

    classes = cfg.ATTACKER.VICTIM_CLASSES
    valid = (f"a list of distinct class ids in 0 .. {info.num_classes - 1} "
             f"(or []: every class)")
    for key, value in (("ATTACKER.VICTIM_CLASSES", classes),
                       ("ATTACKER.TEST.LABELS", cfg.ATTACKER.TEST.LABELS)):
        _check(len(set(value)) == len(value) and all(
            isinstance(c, int) and 0 <= c < info.num_classes for c in value),
            key, value, valid)
    _check(set(cfg.ATTACKER.TEST.LABELS) <= set(classes or range(info.num_classes)),
           "ATTACKER.TEST.LABELS", cfg.ATTACKER.TEST.LABELS,
           f"a subset of ATTACKER.VICTIM_CLASSES={classes}")
    dims = cfg.ATTACKER.MODEL.LAYER_DIMS
    _check(all(isinstance(d, int) and d > 0 for d in dims), "ATTACKER.MODEL.LAYER_DIMS", dims,
           "a list of positive integers (hidden layer widths)")
    _check_name("ATTACKER.MODEL.INPUT_SCALING", cfg.ATTACKER.MODEL.INPUT_SCALING, INPUT_SCALINGS)
    _check(-1 <= cfg.ATTACKER.TRAIN.VAL_SHADOWS < cfg.SHADOW.NUM_MODELS,
           "ATTACKER.TRAIN.VAL_SHADOWS", cfg.ATTACKER.TRAIN.VAL_SHADOWS,
           f"0 .. SHADOW.NUM_MODELS - 1 = {cfg.SHADOW.NUM_MODELS - 1} (shadows held out), "
           f"or -1 (automatic)")
    _check(0.0 <= cfg.ATTACKER.PRED_THRESHOLD <= 1.0, "ATTACKER.PRED_THRESHOLD",
           cfg.ATTACKER.PRED_THRESHOLD, "a number in [0, 1]")
    methods = cfg.ATTACKER.METHODS
    _check(len(methods) > 0 and len(set(methods)) == len(methods)
           and all(m in METHOD_NAMES for m in methods), "ATTACKER.METHODS", methods,
           "a non-empty list of distinct names from " + ", ".join(METHOD_NAMES))
    _check(cfg.SHADOW.SAMPLING in _SAMPLINGS, "SHADOW.SAMPLING", cfg.SHADOW.SAMPLING,
           ", ".join(_SAMPLINGS))
    dp = cfg.VICTIM.DP
    _check(dp.NOISE_MULTIPLIER >= 0, "VICTIM.DP.NOISE_MULTIPLIER", dp.NOISE_MULTIPLIER,
           "a number >= 0 (0.0: no DP-SGD)")
    _check(dp.TARGET_EPSILON >= 0 and not (dp.TARGET_EPSILON > 0 and dp.NOISE_MULTIPLIER > 0),
           "VICTIM.DP.TARGET_EPSILON", dp.TARGET_EPSILON,
           "a number >= 0, and 0.0 while VICTIM.DP.NOISE_MULTIPLIER is set")
    _check(dp.MAX_GRAD_NORM > 0, "VICTIM.DP.MAX_GRAD_NORM", dp.MAX_GRAD_NORM, "a number > 0")
    _check(0 < dp.DELTA < 1, "VICTIM.DP.DELTA", dp.DELTA, "a number in (0, 1)")
    if dp.NOISE_MULTIPLIER > 0 or dp.TARGET_EPSILON > 0:
        _check(not cfg.MIXED_PRECISION, "MIXED_PRECISION", True, "False with VICTIM.DP")
        _check(cfg.VICTIM.TRAIN.BATCH_SIZE < cfg.VICTIM.TRAIN.SET_SIZE, "VICTIM.TRAIN.BATCH_SIZE",
               cfg.VICTIM.TRAIN.BATCH_SIZE, "less than VICTIM.TRAIN.SET_SIZE with VICTIM.DP "
               "(the expected size of a Poisson batch)")
        # the DP-SGD trainer runs a plain optimizer and loss (engine/classifier.py)
        for node in ("VICTIM", "SHADOW"):
            for key, plain in (("OPTIMIZER.SCHEDULER", "none"), ("OPTIMIZER.WARMUP_EPOCHS", 0),
                               ("TRAIN.AUGMENT", "none"), ("TRAIN.LABEL_SMOOTHING", 0),
                               ("TRAIN.MIXUP_ALPHA", 0), ("TRAIN.EARLY_STOP_PATIENCE", 0),
                               ("MODEL.INIT", "default"),
                               ("OPTIMIZER.NORM_BIAS_LR_SCALE", 1.0)):
                value = _effective(cfg, f"{node}.{key}")
                # SHADOW.MODEL.INIT "": the victim's (checked) or, for another
                # architecture, its default
                _check(value == plain or (key == "MODEL.INIT" and value == ""),
                       f"{node}.{key}", value, f"{plain} with VICTIM.DP "
                       "(DP-SGD trains without schedules, augmentation, label smoothing, "
                       "MixUp, early stopping, airbench's initialisation or a batch-norm "
                       "bias rate)")
    _check(cfg.VICTIM.OUTPUT in OUTPUTS, "VICTIM.OUTPUT", cfg.VICTIM.OUTPUT, ", ".join(OUTPUTS))
    _check(1 <= cfg.VICTIM.OUTPUT_TOPK <= info.num_classes, "VICTIM.OUTPUT_TOPK",
           cfg.VICTIM.OUTPUT_TOPK, f"1 .. {info.num_classes} (the classes of {cfg.DATASET.NAME})")
    _check(cfg.VICTIM.OUTPUT_DECIMALS >= 0, "VICTIM.OUTPUT_DECIMALS", cfg.VICTIM.OUTPUT_DECIMALS,
           "an integer >= 0")
    _check_positive(cfg, ["ATTACKER.LABEL_ONLY.MAX_SHIFT"], strict=False)
    most = max_queries(cfg.ATTACKER.LABEL_ONLY.MAX_SHIFT)
    _check(1 <= cfg.ATTACKER.LABEL_ONLY.NUM_QUERIES <= most, "ATTACKER.LABEL_ONLY.NUM_QUERIES",
           cfg.ATTACKER.LABEL_ONLY.NUM_QUERIES,
           f"1 .. {most} (the augmentations of ATTACKER.LABEL_ONLY.MAX_SHIFT "
           f"{cfg.ATTACKER.LABEL_ONLY.MAX_SHIFT})")
    _check("label_only" not in methods or info.is_image, "ATTACKER.METHODS", methods,
           f"methods without label_only: it flips and shifts images, {cfg.DATASET.NAME} "
           f"records are feature vectors")
    can = methods_for_output(cfg.VICTIM.OUTPUT)
    _check(set(methods) <= set(can), "ATTACKER.METHODS", methods,
           f"methods that run on VICTIM.OUTPUT {cfg.VICTIM.OUTPUT}: {', '.join(can)}")
    needs = [m for m in methods if m in NEEDS_RANDOM_HALF]
    _check(not needs or cfg.SHADOW.SAMPLING == "random_half", "SHADOW.SAMPLING",
           cfg.SHADOW.SAMPLING, f"random_half for ATTACKER.METHODS {needs}")
    views = cfg.ATTACKER.QUERY_AUGMENTATIONS
    _check(views in QUERY_VIEWS, "ATTACKER.QUERY_AUGMENTATIONS", views,
           ", ".join(map(str, QUERY_VIEWS)))
    _check(views == 1 or info.is_image, "ATTACKER.QUERY_AUGMENTATIONS", views,
           f"1 for {cfg.DATASET.NAME} (feature vectors; the views flip and shift images)")
    _check(cfg.ATTACKER.LIRA.ESTIMATOR in _LIRA_ESTIMATORS, "ATTACKER.LIRA.ESTIMATOR",
           cfg.ATTACKER.LIRA.ESTIMATOR, ", ".join(_LIRA_ESTIMATORS))
    _check_positive(cfg, ["ATTACKER.RMIA.NUM_POPULATION"])
    _check_positive(cfg, ["ATTACKER.TEST.BOOTSTRAP"], strict=False)
    _check(0.0 <= cfg.ATTACKER.RMIA.OFFLINE_A <= 1.0, "ATTACKER.RMIA.OFFLINE_A",
           cfg.ATTACKER.RMIA.OFFLINE_A, "a number in [0, 1]")
    _check(cfg.ATTACKER.RMIA.GAMMA > 0, "ATTACKER.RMIA.GAMMA", cfg.ATTACKER.RMIA.GAMMA,
           "a number > 0")
    _check(0.0 <= cfg.ATTACKER.AUDIT.DELTA < 1.0, "ATTACKER.AUDIT.DELTA", cfg.ATTACKER.AUDIT.DELTA,
           "a number in [0, 1)")
    _check(0.5 <= cfg.ATTACKER.AUDIT.CONFIDENCE < 1.0, "ATTACKER.AUDIT.CONFIDENCE",
           cfg.ATTACKER.AUDIT.CONFIDENCE, "a number in [0.5, 1)")
    _check(cfg.ATTACKER.TEST.ROUTING in _ROUTINGS, "ATTACKER.TEST.ROUTING",
           cfg.ATTACKER.TEST.ROUTING, ", ".join(_ROUTINGS))
    # argmax routing scores the predicted class, which is always "correct"
    _check(not ("correctness" in methods and cfg.ATTACKER.TEST.ROUTING == "argmax"),
           "ATTACKER.TEST.ROUTING", "argmax", "label while ATTACKER.METHODS has correctness")
    _check(bool(_DEVICE_RE.match(cfg.DEVICE)), "DEVICE", cfg.DEVICE, "auto, cpu, cuda, cuda:N")
    _check(not (cfg.USE_GPU == 0 and cfg.DEVICE.startswith("cuda")), "DEVICE", cfg.DEVICE,
           "cpu or auto while USE_GPU is 0")

    for key in ("SHADOW.TRAIN.DATA_PATH", "ATTACKER.TEST.DATA_PATH"):
        path = _get(cfg, key)
        _check(not path or os.path.isfile(path), key, path, "an existing file, or empty")
    test_dir = cfg.ATTACKER.TEST.CHECKPOINT_DIR
    _check(not test_dir or os.path.isdir(test_dir), "ATTACKER.TEST.CHECKPOINT_DIR", test_dir,
           "an existing folder of attack_model_<k>/checkpoint.pth, or empty")


def infer_cfg(cfg):
    """Fill the values left to be derived; return [(key, value)] of what was set."""
    derived = []

    def put(key, value):
        _set(cfg, key, value)
        derived.append((key, value))

    if cfg.ATTACKER.TRAIN.VAL_SHADOWS == -1:
        put("ATTACKER.TRAIN.VAL_SHADOWS", 1 if cfg.SHADOW.NUM_MODELS > 1 else 0)

    info, (num_train, _) = dataset_info(cfg)
    members = _members_count(cfg, num_train)
    for key in ("VICTIM.TRAIN.SET_SIZE", "DATASET.VICTIM_POOL_SIZE"):
        if members and _get(cfg, key) != members:  # the victim's records are the members
            put(key, members)
    for key in _DATASET_KEYS:
        if not _get(cfg, key):
            put(key, cfg.DATASET.NAME)
    if cfg.VICTIM.NUM_CLASSES == -1:
        put("VICTIM.NUM_CLASSES", info.num_classes)
    if cfg.VICTIM.IN_FEATURES == -1:
        put("VICTIM.IN_FEATURES", info.shape[0])
    if cfg.DATASET.TEST_FRACTION == -1 and not info.num_test:
        put("DATASET.TEST_FRACTION", info.test_fraction)
    for key, value in (("DATASET.MEAN", info.mean), ("DATASET.STD", info.std)):
        if not _get(cfg, key) and value:  # (): none; None: computed when the data is loaded
            put(key, list(value))
    if not cfg.ATTACKER.VICTIM_CLASSES:
        put("ATTACKER.VICTIM_CLASSES", list(range(info.num_classes)))
    if not cfg.ATTACKER.TEST.LABELS:
        put("ATTACKER.TEST.LABELS", list(cfg.ATTACKER.VICTIM_CLASSES))
    for key, (victim_key, follow) in _FOLLOW_VICTIM_ARCH.items():
        if _get(cfg, key) == follow and cfg.SHADOW.MODEL.ARCH in ("", cfg.VICTIM.MODEL.ARCH) \
                and _get(cfg, victim_key) != follow:
            value = _get(cfg, victim_key)
            put(key, list(value) if isinstance(value, list) else value)
    if not cfg.SHADOW.MODEL.INIT:  # another architecture than the victim's
        put("SHADOW.MODEL.INIT", "default")
    for key, (victim_key, follow) in _FOLLOW_VICTIM.items():
        if _get(cfg, key) == follow:
            put(key, _get(cfg, victim_key))
    if not cfg.OUTPUT_DIR:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        arch = cfg.SHADOW.MODEL.ARCH.replace(":", ".")  # a module:Class path, as a file name
        name = f"{stamp}_{arch}_{cfg.ATTACKER.MODEL.ARCH}"
        put("OUTPUT_DIR", os.path.join(cfg.LOG_DIR, cfg.DATASET.NAME, name))
    if not cfg.SHADOW.TRAIN.CHECKPOINT_DIR:
        put("SHADOW.TRAIN.CHECKPOINT_DIR", os.path.join(cfg.OUTPUT_DIR, "shadow_files"))
    if not cfg.ATTACKER.TRAIN.CHECKPOINT_DIR:
        put("ATTACKER.TRAIN.CHECKPOINT_DIR", os.path.join(cfg.OUTPUT_DIR, "attacker_files"))
    if not cfg.ATTACKER.TEST.CHECKPOINT_DIR:
        put("ATTACKER.TEST.CHECKPOINT_DIR", cfg.ATTACKER.TRAIN.CHECKPOINT_DIR)
    return derived
