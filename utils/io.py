"""Atomic writes and safe reads of every artifact the toolkit makes or loads."""

import io
import json
import os
import pickle
import tempfile

import numpy as np
import torch

from utils.errors import RunError

# Globals a pickle of plain containers and numpy arrays may name: nothing else loads.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}'")


def atomic_write(path, write_fn, binary=True):
    """Call write_fn(file) on a temporary file beside `path`, then rename it into place."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False), binary=False)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path}: {e}") from None


def save_text(path, text):
    atomic_write(path, lambda f: f.write(text), binary=False)


def save_pickle(path, obj):
    atomic_write(path, lambda f: pickle.dump(obj, f, protocol=4))


def load_pickle(path, encoding="ASCII"):
    """Unpickle plain containers and numpy arrays only; anything else is refused unrun."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding=encoding).load()
    except OSError as e:
        raise RunError(f"cannot read {path}: {e.strerror}") from None
    except Exception as e:  # a tampered or truncated file raises many kinds of error
        reason = " ".join(str(e).split())[:120]  # it may quote the file's bytes
        raise RunError(f"refusing {path}: not a valid data pickle ({type(e).__name__}: "
                       f"{reason!r})") from None


def save_npz(path, **arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def load_npz(path, keys):
    """The named arrays of an .npz (no pickled objects allowed)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise RunError(f"{path} lacks arrays {missing}; it holds {z.files}")
            return {k: z[k] for k in keys}
    except RunError:
        raise
    except Exception as e:
        raise RunError(f"cannot read {path}: {e}") from None


def save_checkpoint(path, state_dict, **meta):
    """Weights plus plain metadata (arch, metrics, config text); loadable with weights_only."""
    buf = io.BytesIO()
    torch.save({"state_dict": state_dict, **meta}, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def load_weights(path):
    """Whatever torch.save wrote at path, loaded with weights_only=True (tensors and plain
    containers only, so that no code in it can run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"checkpoint not found: {path}") from None
    except Exception as e:
        raise RunError(f"refusing checkpoint {path}: {str(e).splitlines()[0]}") from None


def load_checkpoint(path):
    """A checkpoint dict of this toolkit (weights under 'state_dict', plus metadata)."""
    ckpt = load_weights(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise RunError(f"{path} is not a checkpoint of this toolkit (no 'state_dict')")
    return ckpt
