"""Label-only membership signal (Choquette-Choo et al. 2021, "Label-Only Membership
Inference Attacks"): how often a model still predicts a record's true class on augmented
copies of it (horizontal flips and small translations). Members, fitted on, stay correct
under augmentation more often. Higher = more likely member.
"""

from attack_models.queries import apply_view


def augmentations(num_queries, max_shift):
    """The first num_queries of (flip, dy, dx) triples: the record itself first, then its
    flip, then shifts by |dy| + |dx| <= max_shift pixels (nearest first), each unflipped
    then flipped. Raises ValueError when there are fewer."""
    shifts = sorted(((dy, dx) for dy in range(-max_shift, max_shift + 1)
                     for dx in range(-max_shift, max_shift + 1)
                     if abs(dy) + abs(dx) <= max_shift),
                    key=lambda s: (abs(s[0]) + abs(s[1]), s))
    augs = [(flip, dy, dx) for dy, dx in shifts for flip in (False, True)]
    if num_queries > len(augs):
        raise ValueError(f"{num_queries} queries asked, {len(augs)} augmentations with "
                         f"shifts of up to {max_shift} pixel(s)")
    return augs[:num_queries]


def max_queries(max_shift):
    """How many distinct augmentations shifts of up to max_shift pixels give."""
    return 2 * (2 * max_shift * (max_shift + 1) + 1)


def augment(x, flip, dy, dx):
    """(B, C, H, W) images flipped left-right (when flip), then moved dy pixels down and dx
    right, the uncovered border zero (the normalised records' mean): a query view whose
    crop moves the other way, over zero padding."""
    return apply_view(x, (flip, -dy, -dx), border="constant")
