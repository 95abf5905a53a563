"""Which config keys made an artifact, so a run folder is reused only where still valid."""

import hashlib
import json

# Keys naming a file whose content, not only its name, decides an artifact.
_CONTENT_KEYS = ("VICTIM.MEMBERS",)
# Keys added after run folders were made, left out of a fingerprint while the key named
# beside them holds the value that trains what those folders hold (so they stay valid):
# key -> (deciding key, its "off" value).
_ADDED_OFF = {
    "VICTIM.TRAIN.MIXUP_ALPHA": ("VICTIM.TRAIN.MIXUP_ALPHA", 0.0),
    "SHADOW.TRAIN.MIXUP_ALPHA": ("SHADOW.TRAIN.MIXUP_ALPHA", 0.0),
    "VICTIM.TRAIN.EARLY_STOP_PATIENCE": ("VICTIM.TRAIN.EARLY_STOP_PATIENCE", 0),
    "VICTIM.TRAIN.EARLY_STOP_RECORDS": ("VICTIM.TRAIN.EARLY_STOP_PATIENCE", 0),
    "SHADOW.TRAIN.EARLY_STOP_PATIENCE": ("SHADOW.TRAIN.EARLY_STOP_PATIENCE", 0),
    "SHADOW.TRAIN.EARLY_STOP_RECORDS": ("SHADOW.TRAIN.EARLY_STOP_PATIENCE", 0),
    "ATTACKER.OPTIMIZER.SCHEDULER": ("ATTACKER.OPTIMIZER.SCHEDULER", "none"),
    "ATTACKER.OPTIMIZER.MILESTONES": ("ATTACKER.OPTIMIZER.SCHEDULER", "none"),
    "ATTACKER.OPTIMIZER.LR_DECAY": ("ATTACKER.OPTIMIZER.SCHEDULER", "none"),
    "ATTACKER.OPTIMIZER.WARMUP_EPOCHS": ("ATTACKER.OPTIMIZER.WARMUP_EPOCHS", 0.0),
    "ATTACKER.TRAIN.NUM_STEPS": ("ATTACKER.TRAIN.NUM_STEPS", 0),
    "VICTIM.MODEL.INIT": ("VICTIM.MODEL.INIT", "default"),
    "SHADOW.MODEL.INIT": ("SHADOW.MODEL.INIT", "default"),
    "VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE": ("VICTIM.OPTIMIZER.NORM_BIAS_LR_SCALE", 1.0),
    "SHADOW.OPTIMIZER.NORM_BIAS_LR_SCALE": ("SHADOW.OPTIMIZER.NORM_BIAS_LR_SCALE", 1.0),
}


def flatten(node, prefix=""):
    """Nested dict (or CfgNode) -> {"A.B.C": value}, tuples as lists."""
    out = {}
    for key, value in node.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, full + "."))
        else:
            out[full] = list(value) if isinstance(value, tuple) else value
    return out


def fingerprint(cfg, prefixes, exclude=()):
    """{key: value} of the config keys under `prefixes`, less those under `exclude` and
    the added keys that are off (_ADDED_OFF)."""
    flat = flatten(cfg)
    fp = {k: v for k, v in sorted(flat.items())
          if any(k == p or k.startswith(p + ".") for p in prefixes)
          and not any(k == e or k.startswith(e + ".") for e in exclude)
          and not (k in _ADDED_OFF and flat.get(_ADDED_OFF[k][0]) == _ADDED_OFF[k][1])}
    for key in _CONTENT_KEYS:
        if fp.get(key):
            fp[key] = f"{fp[key]} (sha256 {file_digest(fp[key])})"
    return fp


def file_digest(path):
    """The first 16 hex digits of the file's SHA-256 ("missing" when it cannot be read)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return "missing"
    return h.hexdigest()[:16]


def digest(fp):
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def differing_keys(old, new):
    """'KEY: old -> new' for every key whose value differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
            for k in keys if old.get(k) != new.get(k)]
