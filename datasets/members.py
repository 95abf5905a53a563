"""VICTIM.MEMBERS: the train-split indices a victim trained outside the toolkit was trained
on, from a .npy, an .npz (one array, or the one named 'members') or a text file with one
index per line."""

import os

import numpy as np

from utils.errors import UsageError

# The array an .npz of several arrays holds the members in.
NPZ_KEY = "members"


def _fail(path, why):
    raise UsageError(f"VICTIM.MEMBERS: {path} {why}")


def _read_text(path):
    """(n,) int64 from a text file of one integer per line (blank lines skipped)."""
    values = []
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                word = line.strip()
                if not word:
                    continue
                try:
                    values.append(int(word))
                except ValueError:
                    _fail(path, f"line {number} is {word[:40]!r}, not an integer index")
    except (OSError, UnicodeDecodeError) as e:
        _fail(path, f"cannot be read as text of one index per line ({e})")
    return np.array(values, dtype=np.int64)


def _read_array(path):
    """The array stored in a .npy, or in an .npz (its only array, or NPZ_KEY)."""
    try:
        stored = np.load(path, allow_pickle=False)
        if isinstance(stored, np.ndarray):
            return stored
        with stored:
            names = stored.files
            if len(names) != 1 and NPZ_KEY not in names:
                _fail(path, f"holds arrays {names}; expected one array, or one named "
                            f"'{NPZ_KEY}'")
            return stored[names[0] if len(names) == 1 else NPZ_KEY]
    except UsageError:
        raise
    except Exception as e:  # not a .npy/.npz, truncated, or holding pickled objects
        _fail(path, f"cannot be read as a .npy or .npz of integers ({type(e).__name__}: "
                    f"{str(e).strip()[:120]})")


def read_members(path):
    """(n,) integer array as stored in the file, in its order."""
    if not os.path.isfile(path):
        _fail(path, "is not a file")
    if os.path.splitext(path)[1].lower() in (".npy", ".npz"):
        arr = _read_array(path)
        if arr.dtype.kind not in "iu":
            _fail(path, f"holds {arr.dtype} values; expected integer train-split indices")
        if arr.ndim != 1 and arr.size not in arr.shape:  # (n, 1) or (1, n) is a list too
            _fail(path, f"holds an array of shape {arr.shape}; expected one index per record "
                        f"(n,)")
        return arr.reshape(-1)
    return _read_text(path)


def load_members(path, num_train):
    """(n,) sorted int64 train-split indices from the file at path; UsageError with the
    numbers when one is out of 0 .. num_train - 1, repeated, or the file holds none."""
    members = read_members(path)
    if not len(members):
        _fail(path, "holds no indices")
    outside = members[(members < 0) | (members >= num_train)]
    if len(outside):
        _fail(path, f"has {len(outside)} indices outside 0 .. {num_train - 1} (the train split "
                    f"has {num_train} records), e.g. {outside[0]}")
    values, counts = np.unique(members, return_counts=True)
    repeated = values[counts > 1]
    if len(repeated):
        _fail(path, f"repeats {len(repeated)} indices (e.g. {repeated[0]}, {counts.max()} "
                    f"times); each record is a member once")
    return values.astype(np.int64)
