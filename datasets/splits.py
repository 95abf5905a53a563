"""Seeded, class-balanced, disjoint index splits (all indices are into the train split
unless named eval_out, which indexes the test split)."""

import numpy as np


def stratified_sample(indices, labels, size, rng):
    """`size` of `indices` drawn without replacement, spread over classes as evenly as the
    classes allow (remainders to the classes with most records left); sorted int64."""
    indices = np.asarray(indices, dtype=np.int64)
    classes = labels[indices]
    by_class = [indices[classes == c] for c in np.unique(classes)]
    if size > len(indices):
        raise ValueError(f"cannot draw {size} records from {len(indices)}")
    quota = np.zeros(len(by_class), dtype=np.int64)
    left = size
    while left:  # water-filling: equal shares, capped by what each class holds
        room = np.array([len(b) for b in by_class]) - quota
        open_ = np.nonzero(room > 0)[0]
        share = max(left // len(open_), 1)
        for c in open_[np.argsort(-room[open_], kind="stable")]:
            take = min(share, room[c], left)
            quota[c] += take
            left -= take
            if not left:
                break
    picked = [rng.choice(b, q, replace=False) for b, q in zip(by_class, quota) if q]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def split_victim_shadow(labels, victim_pool_size, seed, members=None):
    """dict(victim_pool, shadow_in_pool, shadow_out_pool): disjoint, class-balanced,
    together the whole train split; the shadow pool is halved class by class. members:
    (n,) train indices a victim trained outside the toolkit was trained on, which are
    then the victim pool (victim_pool_size is ignored)."""
    rng = np.random.default_rng([seed, 0])
    everything = np.arange(len(labels))
    victim_pool = (np.sort(np.asarray(members, dtype=np.int64)) if members is not None
                   else stratified_sample(everything, labels, victim_pool_size, rng))
    shadow_pool = np.setdiff1d(everything, victim_pool)
    shadow_in = stratified_sample(shadow_pool, labels, len(shadow_pool) // 2, rng)
    shadow_out = np.setdiff1d(shadow_pool, shadow_in)
    return {"victim_pool": victim_pool, "shadow_in_pool": shadow_in, "shadow_out_pool": shadow_out}


def sample_victim_train(victim_pool, labels, size, seed):
    """The victim's training records: `size` of the victim pool, class-balanced."""
    return stratified_sample(victim_pool, labels, size, np.random.default_rng([seed, 1]))


def build_eval_set(victim_train, train_labels, test_labels, balanced, seed):
    """dict(eval_in, eval_out): victim-train ("in", train-split indices) and test-split
    ("out") records; balanced takes min(n_in, n_out) of each, class-balanced."""
    eval_in, eval_out = np.asarray(victim_train), np.arange(len(test_labels))
    if balanced:
        rng = np.random.default_rng([seed, 2])
        n = min(len(eval_in), len(eval_out))
        eval_in = stratified_sample(eval_in, train_labels, n, rng)
        eval_out = stratified_sample(eval_out, test_labels, n, rng)
    return {"eval_in": eval_in, "eval_out": eval_out}


def split_train_test(labels, test_fraction, seed):
    """(train, test) sorted int64 indices of a data set without an official test split:
    round(test_fraction * n) test records, each class contributing in proportion to its
    size (the largest remainders take the rounding)."""
    labels = np.asarray(labels)
    num_test = round(test_fraction * len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * num_test / len(labels)
    quota = np.floor(exact).astype(np.int64)
    quota[np.argsort(quota - exact, kind="stable")[:num_test - quota.sum()]] += 1
    rng = np.random.default_rng([seed, 6])
    test = np.concatenate([rng.choice(np.nonzero(labels == c)[0], q, replace=False)
                           for c, q in zip(classes, quota)] + [np.zeros(0, np.int64)])
    test = np.sort(test).astype(np.int64)
    return np.setdiff1d(np.arange(len(labels)), test), test
