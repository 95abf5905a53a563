"""A user's own data set: one .npz at DATASET.PATH holding x_train, y_train, x_test, y_test.

Images are uint8 (n, H, W), (n, H, W, C) or (n, C, H, W); feature vectors float (n, d);
labels integers 0 .. C-1. describe_npz reads only the arrays' headers and the labels, so
the config checks know the data set's sizes and shapes before it is loaded.
"""

import functools
import zipfile

import numpy as np
import torch

from utils.errors import UsageError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
# Largest channel count of an image; it tells (n, C, H, W) from (n, H, W, C).
_MAX_CHANNELS = 4
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _headers(path):
    """{array name: (shape, dtype)} from the .npy headers inside the .npz (no data read)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                with z.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in _HEADER_READERS:
                        raise ValueError(f"unsupported .npy version {version}")
                    shape, _, dtype = _HEADER_READERS[version](f)
                out[member.removesuffix(".npy")] = (shape, dtype)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise UsageError(f"DATASET.PATH: {path} is not a readable .npz ({e})") from None
    return out


def _fail(path, name, expected, got):
    raise UsageError(f"DATASET.PATH: {path}: '{name}' must be {expected}; got {got}")


def _layout(path, shape):
    """'nhw', 'nhwc' or 'nchw' of uint8 image records of this shape."""
    if len(shape) == 3:
        return "nhw"
    if shape[3] <= _MAX_CHANNELS < shape[1]:
        return "nhwc"
    if shape[1] <= _MAX_CHANNELS < shape[3]:
        return "nchw"
    return _fail(path, "x_train", f"images whose channels (1 .. {_MAX_CHANNELS}) are the first or "
                 "last axis after n", f"shape {shape}")


def _record_shape(layout, shape):
    """One record as (C, H, W) or (d,)."""
    return {"nhw": lambda s: (1, s[1], s[2]), "nhwc": lambda s: (s[3], s[1], s[2]),
            "nchw": lambda s: tuple(s[1:]), "features": lambda s: (s[1],)}[layout](shape)


def _check_x(path, headers):
    """The layout of x_train and x_test; one line naming the array when they do not fit."""
    shape, dtype = headers["x_train"]
    if len(shape) == 2:
        if dtype.kind != "f":
            _fail(path, "x_train", "float feature vectors (n, d)", f"{dtype} of shape {shape}")
        layout = "features"
    elif len(shape) in (3, 4):
        if dtype != np.uint8:
            _fail(path, "x_train", "uint8 images (0 .. 255)", f"{dtype} of shape {shape}")
        layout = _layout(path, shape)
        record = _record_shape(layout, shape)
        if record[1] != record[2]:
            _fail(path, "x_train", "square images (H == W)", f"shape {shape}")
    else:
        _fail(path, "x_train", "(n, H, W), (n, H, W, C), (n, C, H, W) uint8 images or (n, d) "
              "float features", f"shape {shape}")
    test_shape, test_dtype = headers["x_test"]
    if test_shape[1:] != shape[1:] or test_dtype.kind != dtype.kind:
        kind = "float" if layout == "features" else "uint8"
        _fail(path, "x_test", f"{kind} records shaped as x_train's {shape[1:]}",
              f"{test_dtype} of shape {test_shape}")
    for name, (s, _) in (("x_train", (shape, dtype)), ("x_test", (test_shape, test_dtype))):
        if s[0] == 0:
            _fail(path, name, "at least one record", "none")
    return layout


def _check_labels(path, headers):
    """Number of classes (max train label + 1); one line naming the labels that do not fit."""
    for split in ("train", "test"):
        name, n = f"y_{split}", headers[f"x_{split}"][0][0]
        shape, dtype = headers[name]
        if shape != (n,) or dtype.kind not in "iu":
            _fail(path, name, f"({n},) integer labels, one per record of x_{split}",
                  f"{dtype} of shape {shape}")
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: f[name] for name in ("y_train", "y_test")}
    num_classes = int(arrays["y_train"].max()) + 1
    for name in ("y_train", "y_test"):
        y = arrays[name]
        if y.min() < 0 or y.max() >= num_classes:
            _fail(path, name, f"labels in 0 .. {num_classes - 1} (the classes of y_train)",
                  f"labels {y.min()} .. {y.max()}")
    return num_classes


def describe_npz(path):
    """The DatasetInfo of the .npz at path, from its headers and labels only."""
    from datasets.registry import DatasetInfo  # the registry imports this module

    if not path:
        raise UsageError("DATASET.PATH: empty; DATASET.NAME npz needs a .npz file holding "
                         + ", ".join(ARRAYS))
    headers = _headers(path)
    missing = [a for a in ARRAYS if a not in headers]
    if missing:
        raise UsageError(f"DATASET.PATH: {path} lacks '{missing[0]}'; expected arrays "
                         f"{', '.join(ARRAYS)}")
    layout = _check_x(path, headers)
    num_classes = _check_labels(path, headers)
    shape = _record_shape(layout, headers["x_train"][0])
    n_train, n_test = headers["x_train"][0][0], headers["x_test"][0][0]
    features = layout == "features"
    return DatasetInfo(num_classes=num_classes, shape=shape, num_records=n_train + n_test,
                       num_test=n_test, mean=() if features else None,
                       std=() if features else None,
                       loader=functools.partial(load_npz_dataset, path, layout))


def _records(x, layout):
    """Records as the engine holds them: uint8 (n, C, H, W) or float32 (n, d)."""
    if layout == "features":
        return torch.from_numpy(np.ascontiguousarray(x, np.float32))
    x = {"nhw": lambda a: a[:, None], "nhwc": lambda a: a.transpose(0, 3, 1, 2),
         "nchw": lambda a: a}[layout](x)
    return torch.from_numpy(np.ascontiguousarray(x))


def load_npz_dataset(path, layout, root=None, download=False):
    """dict(train_x, train_y, test_x, test_y) from the .npz; root and download are unused
    (the registry's loader signature)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in ARRAYS}
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"DATASET.PATH: cannot read {path}: {e}") from None
    return {"train_x": _records(arrays["x_train"], layout),
            "train_y": torch.from_numpy(arrays["y_train"].astype(np.int64)),
            "test_x": _records(arrays["x_test"], layout),
            "test_y": torch.from_numpy(arrays["y_test"].astype(np.int64))}
