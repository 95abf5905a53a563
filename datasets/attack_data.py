"""The per-class attack training data, grown shadow by shadow.

On disk (a plain pickle, loadable without this toolkit):
`{class: {"data": float32 (n, num_classes) posteriors, "labels": int64 (n,) 1=in 0=out,
"shadow": int64 (n,) id of the shadow that produced the row}}`, and with several query
views (ATTACKER.QUERY_AUGMENTATIONS > 1) "views": float32 (n, A, num_classes) posteriors
on each view (view 0: the record itself, as "data").
"""

import numpy as np

from utils.errors import RunError
from utils.io import load_npz, load_pickle, save_npz, save_pickle


class AttackData:
    """Per-class posteriors with membership labels, keyed by class id (int)."""

    def __init__(self, classes, num_features, num_views=1):
        self.num_features = num_features
        self.store = {int(c): {"data": np.zeros((0, num_features), np.float32),
                               "labels": np.zeros(0, np.int64),
                               "shadow": np.zeros(0, np.int64)} for c in classes}
        if num_views > 1:
            for entry in self.store.values():
                entry["views"] = np.zeros((0, num_views, num_features), np.float32)

    def add(self, shadow_id, posteriors, classes, membership, views=None, extra=None):
        """Append one shadow's records: (n, C) float posteriors, (n,) true classes and
        (n,) 1/0 membership, (n, A, C) posteriors on each query view when the data holds
        views, and any per-record signals in `extra` ({name: (n,) float}, e.g.
        label_only); records of classes without an entry are dropped."""
        posteriors = np.asarray(posteriors, np.float32)
        classes, membership = np.asarray(classes), np.asarray(membership, np.int64)
        for c, entry in self.store.items():
            keep = classes == c
            for name, values in (extra or {}).items():
                old = entry.get(name, np.zeros(0, np.float32))
                entry[name] = np.concatenate([old, np.asarray(values, np.float32)[keep]])
            entry["data"] = np.concatenate([entry["data"], posteriors[keep]])
            if "views" in entry:
                entry["views"] = np.concatenate([entry["views"],
                                                 np.asarray(views, np.float32)[keep]])
            entry["labels"] = np.concatenate([entry["labels"], membership[keep]])
            entry["shadow"] = np.concatenate(
                [entry["shadow"], np.full(int(keep.sum()), shadow_id, np.int64)])

    def shadow_ids(self):
        """Sorted ids of the shadows whose records are held."""
        ids = [e["shadow"] for e in self.store.values()]
        return sorted(set(np.concatenate(ids).tolist())) if ids else []

    def keep_shadows(self, ids):
        """Drop every record not made by a shadow in `ids`."""
        ids = np.asarray(sorted(ids), np.int64)
        for entry in self.store.values():
            keep = np.isin(entry["shadow"], ids)
            for key in entry:
                entry[key] = entry[key][keep]

    def save(self, path):
        """Pickle atomically, rows ordered by shadow id (stable), whatever order the shadows
        finished in."""
        for entry in self.store.values():
            order = np.argsort(entry["shadow"], kind="stable")
            for key in entry:
                entry[key] = entry[key][order]
        save_pickle(path, self.store)

    @classmethod
    def load(cls, path):
        """Read a saved container (safely: containers and arrays only); RunError if the
        file is not one."""
        store = load_pickle(path)
        try:
            first = next(iter(store.values()))
            obj = cls(store.keys(), first["data"].shape[1])
            for c, entry in store.items():
                n = len(entry["labels"])
                shadow = entry["shadow"] if "shadow" in entry else np.zeros(n, np.int64)
                obj.store[int(c)] = {"data": np.asarray(entry["data"], np.float32),
                                     "labels": np.asarray(entry["labels"], np.int64),
                                     "shadow": np.asarray(shadow, np.int64)}
                if "views" in entry:
                    obj.store[int(c)]["views"] = np.asarray(entry["views"], np.float32)
                extra = {k: np.asarray(v, np.float32) for k, v in entry.items()
                         if k not in obj.store[int(c)]}
                obj.store[int(c)].update(extra)
                if obj.store[int(c)]["data"].shape != (n, obj.num_features) or len(shadow) != n \
                        or any(len(v) != n for v in extra.values()) \
                        or len(obj.store[int(c)].get("views", shadow)) != n:
                    raise ValueError(f"class {c}: arrays of different lengths")
        except (AttributeError, KeyError, TypeError, ValueError, StopIteration) as e:
            raise RunError(f"refusing {path}: not per-class attack data ({e})") from None
        return obj


class ReferenceData:
    """What LiRA and RMIA need of the shadows (reference models) in random_half sampling:
    per shadow and population record, membership and the shadow's outputs.

    records: (N,) int64 global indices (the population P, targets first, then RMIA's z
    records); member: (S, N) bool; phi, p_true: (S, N) float32 (logit-scaled confidence
    log(p_y / (1 - p_y)) and true-class probability), or (S, N, A) with A > 1 query views
    (ATTACKER.QUERY_AUGMENTATIONS); shadow: (S,) int64 ids.
    """

    _KEYS = ("records", "shadow", "member", "phi", "p_true")

    def __init__(self, records, num_views=1):
        n = len(records)
        shape = (0, n) if num_views == 1 else (0, n, num_views)
        self.arrays = {"records": np.asarray(records, np.int64), "shadow": np.zeros(0, np.int64),
                       "member": np.zeros((0, n), bool), "phi": np.zeros(shape, np.float32),
                       "p_true": np.zeros(shape, np.float32)}

    def add(self, shadow_id, member, phi, p_true):
        a = self.arrays
        a["shadow"] = np.r_[a["shadow"], shadow_id]
        for key, row in (("member", member), ("phi", phi), ("p_true", p_true)):
            a[key] = np.concatenate([a[key], np.asarray(row, a[key].dtype)[None]])

    def shadow_ids(self):
        return sorted(self.arrays["shadow"].tolist())

    def keep_shadows(self, ids):
        keep = np.isin(self.arrays["shadow"], np.asarray(sorted(ids), np.int64))
        for key in ("shadow", "member", "phi", "p_true"):
            self.arrays[key] = self.arrays[key][keep]

    def save(self, path):
        order = np.argsort(self.arrays["shadow"], kind="stable")
        for key in ("shadow", "member", "phi", "p_true"):
            self.arrays[key] = self.arrays[key][order]
        save_npz(path, **self.arrays)

    @classmethod
    def load(cls, path, records):
        """The saved data if it covers exactly `records`; RunError otherwise."""
        arrays = load_npz(path, cls._KEYS)
        if not np.array_equal(arrays["records"], records):
            raise RunError(f"{path} was made for other population records; use a new OUTPUT_DIR")
        obj = cls(records)
        obj.arrays.update(arrays)
        return obj
