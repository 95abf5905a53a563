"""What a victim releases per query (VICTIM.OUTPUT): the transform between its logits and
the vector an attacker reads. The victim and the attacker's shadows release alike.

probs: the softmax posteriors; topk: the OUTPUT_TOPK largest posteriors, the rest zeroed
(not renormalised); rounded: posteriors rounded to OUTPUT_DECIMALS decimals; label: the
predicted class only, as a one-hot vector.
"""

import torch

OUTPUTS = ("probs", "topk", "rounded", "label")
# The config keys of the release: they change the shadows' attack data, not the victim.
RELEASE_KEYS = ("VICTIM.OUTPUT", "VICTIM.OUTPUT_TOPK", "VICTIM.OUTPUT_DECIMALS")
# Smallest released probability whose log the attacks read (a zeroed or rounded-away
# probability becomes log(1e-30) instead of -inf).
_LOG_FLOOR = 1e-30


def release(logits, output, topk=1, decimals=2):
    """(..., C) logits -> (..., C) float32 released vectors."""
    probs = torch.softmax(torch.as_tensor(logits).float(), -1)
    if output == "probs":
        return probs
    if output == "topk":
        kept = torch.topk(probs, topk, dim=-1)
        return torch.zeros_like(probs).scatter_(-1, kept.indices, kept.values)
    if output == "rounded":
        scale = 10.0 ** decimals
        return torch.round(probs * scale) / scale
    if output == "label":
        return torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).float()
    raise ValueError(f"unknown VICTIM.OUTPUT '{output}'; allowed: {', '.join(OUTPUTS)}")


def release_with_logits(logits, output, topk=1, decimals=2):
    """(released (..., C) float32, the logits an attack derives from them): the logits
    themselves for probs, else the floored log of the released vector (its softmax is the
    released vector, renormalised)."""
    released = release(logits, output, topk, decimals)
    if output == "probs":
        return released, torch.as_tensor(logits).float()
    return released, torch.log(torch.clamp(released, min=_LOG_FLOOR))
