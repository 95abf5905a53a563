"""Which config keys made an artifact, so a run folder is reused only where still valid."""

import hashlib
import json


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
    """{key: value} of the config keys under `prefixes`, less those under `exclude`."""
    flat = flatten(cfg)
    return {k: v for k, v in sorted(flat.items())
            if any(k == p or k.startswith(p + ".") for p in prefixes)
            and not any(k == e or k.startswith(e + ".") for e in exclude)}


def digest(fp):
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def differing_keys(old, new):
    """'KEY: old -> new' for every key whose value differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
            for k in keys if old.get(k) != new.get(k)]
