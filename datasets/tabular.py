"""Purchase-100 and Texas-100 (Shokri et al. 2017) in the files their authors distribute:
binary feature vectors and labels 1..100, without an official test split."""

import os
import shutil
import tarfile
import urllib.request

import numpy as np
import torch

from utils.errors import UsageError
from utils.io import atomic_write

# Where the tarballs come from: Reza Shokri's page, then ML Privacy Meter's data repository.
_URLS = ("https://www.comp.nus.edu.sg/~reza/files/{}",
         "https://github.com/privacytrustlab/datasets/raw/master/{}")
_PURCHASE = {"title": "Purchase-100", "tarball": "dataset_purchase.tgz",
             "layouts": [{"table": "dataset_purchase"}]}
# The tarball holds texas/100/{feats,labels}; ML Privacy Meter keeps them as dataset_texas/.
_TEXAS = {"title": "Texas-100", "tarball": "dataset_texas.tgz",
          "layouts": [{"feats": "dataset_texas/feats", "labels": "dataset_texas/labels"},
                      {"feats": "texas/100/feats", "labels": "texas/100/labels"}]}
_NUM_CLASSES = 100


def _present(root, spec):
    """The first layout whose files are all under root, as absolute paths; else None."""
    for layout in spec["layouts"]:
        paths = {k: os.path.join(root, name) for k, name in layout.items()}
        if all(os.path.isfile(p) for p in paths.values()):
            return paths
    return None


def _download(root, spec):
    """Fetch the tarball into root from the first source that answers."""
    os.makedirs(root, exist_ok=True)
    errors = []
    for url in (u.format(spec["tarball"]) for u in _URLS):
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                atomic_write(os.path.join(root, spec["tarball"]),
                             lambda f, r=r: shutil.copyfileobj(r, f))
            return
        except OSError as e:
            errors.append(f"{url}: {e}")
    raise OSError("; ".join(errors))


def _extract(root, spec):
    """Write the tarball's data files (only those a layout names) under root."""
    wanted = {name for layout in spec["layouts"] for name in layout.values()}
    path = os.path.join(root, spec["tarball"])
    try:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                name = os.path.normpath(member.name)  # "./dataset_purchase" too
                if member.isfile() and name in wanted:
                    atomic_write(os.path.join(root, name),
                                 lambda f, m=member: shutil.copyfileobj(tar.extractfile(m), f))
    except (OSError, tarfile.TarError, EOFError) as e:
        raise UsageError(f"DATASET.ROOT: cannot extract {path}: {e}") from None


def _locate(root, spec, download):
    """The data files of spec under root, extracting (and downloading) the tarball as needed."""
    paths = _present(root, spec)
    tarball = os.path.join(root, spec["tarball"])
    if paths is None and not os.path.isfile(tarball) and download:
        try:
            _download(root, spec)
        except OSError as e:
            raise UsageError(f"DATASET.ROOT: could not download {spec['tarball']} ({e}); "
                             f"fetch it by hand into {root}") from None
    if paths is None and os.path.isfile(tarball):
        _extract(root, spec)
        paths = _present(root, spec)
    if paths is None:
        files = " or ".join("+".join(layout.values()) for layout in spec["layouts"])
        sources = " or ".join(u.format(spec["tarball"]) for u in _URLS)
        raise UsageError(f"DATASET.ROOT: {root} holds neither {files} nor {spec['tarball']} "
                         f"({spec['title']}, from {sources}); put the tarball there or set "
                         f"DATASET.DOWNLOAD True")
    return paths


def _read_table(path, columns, what):
    """(n, columns) uint8 array from a comma-separated file of small integers."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8, ndmin=2)
    except (OSError, ValueError) as e:
        raise UsageError(f"DATASET.ROOT: {path} is not a comma-separated table of {what} "
                         f"({str(e).splitlines()[0]})") from None
    if table.shape[1] != columns:
        raise UsageError(f"DATASET.ROOT: {path} has {table.shape[1]} columns; expected {columns} "
                         f"({what})")
    return table


def _labels(raw, path):
    """Labels 1..100 as written in the files -> int64 0..99."""
    raw = np.asarray(raw, np.int64)
    if len(raw) and (raw.min() < 1 or raw.max() > _NUM_CLASSES):
        raise UsageError(f"DATASET.ROOT: {path} has labels {raw.min()} .. {raw.max()}; "
                         f"expected 1 .. {_NUM_CLASSES}")
    return torch.from_numpy(raw - 1)


def load_purchase100(root, download):
    """dict(x, y): (197324, 600) uint8 binary features, int64 labels 0..99, from the file
    dataset_purchase (each line: label 1..100, then 600 features)."""
    path = _locate(root, _PURCHASE, download)["table"]
    table = _read_table(path, 601, "a label and 600 binary features")
    return {"x": torch.from_numpy(np.ascontiguousarray(table[:, 1:])),
            "y": _labels(table[:, 0], path)}


def load_texas100(root, download):
    """dict(x, y): (67330, 6169) uint8 binary features, int64 labels 0..99, from feats
    (one record a line) and labels (one label 1..100 a line)."""
    paths = _locate(root, _TEXAS, download)
    x = _read_table(paths["feats"], 6169, "6169 binary features")
    try:
        raw = np.loadtxt(paths["labels"], dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as e:
        raise UsageError(f"DATASET.ROOT: {paths['labels']} is not one label a line "
                         f"({str(e).splitlines()[0]})") from None
    if len(raw) != len(x):
        raise UsageError(f"DATASET.ROOT: {paths['labels']} has {len(raw)} labels for "
                         f"{len(x)} records in {paths['feats']}")
    return {"x": torch.from_numpy(x), "y": _labels(raw, paths["labels"])}
