"""Augmented queries (ATTACKER.QUERY_AUGMENTATIONS): the victim and every reference model
are asked about the same transformed copies ("views") of each image, as in Carlini et
al. 2022 (Sec. VI-B; their inference.py pads with reflection and shifts the crop) and
Zarifzadeh et al. 2024.

A view is (mirror, dy, dx): a horizontal flip, then a shift of dy rows and dx columns
(pixels) of the reflect-padded image. View 0 is always the record itself.
"""

import torch
import torch.nn.functional as F

# Pixels of the shifts of the 18-view set (the 4-pixel pad of CIFAR training crops).
_SHIFT = 4
_SHIFTS = [(0, 0)] + [(dy, dx) for dy in (-_SHIFT, 0, _SHIFT) for dx in (-_SHIFT, 0, _SHIFT)
                      if (dy, dx) != (0, 0)]
# Allowed view counts -> views: 1 the record; 2 plus its mirror; 18 both x 9 shifts
# (0 and +-4 pixels in each direction). The first views of a longer set are the shorter.
QUERY_VIEWS = {
    1: [(False, 0, 0)],
    2: [(False, 0, 0), (True, 0, 0)],
    18: [(False, 0, 0), (True, 0, 0)]
    + [(mirror, dy, dx) for mirror in (False, True) for dy, dx in _SHIFTS[1:]],
}


def get_query_views(num):
    """The (mirror, dy, dx) views of ATTACKER.QUERY_AUGMENTATIONS = num."""
    return QUERY_VIEWS[num]


def apply_view(x, view, border="reflect"):
    """(B, C, H, W) images -> the same images seen through `view` (same shape): mirrored
    left-right if asked, then the crop moved by (dy, dx) pixels over the padded image
    (its content moves up and left), the borders reflected (border "reflect") or zero
    ("constant")."""
    mirror, dy, dx = view
    if mirror:
        x = x.flip(-1)
    if dy == 0 and dx == 0:
        return x
    pad = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode=border)
    return padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w].contiguous()


@torch.inference_mode()
def query_views(pack, inputs, idx, views, *, batch_size):
    """Members' logits on every view of their own records: (K, n) indices into inputs
    ((N, C, H, W) images) -> (K, n, A, out) float32 CPU logits, A = len(views), in eval
    mode; batch_size records per member and forward pass."""
    pack.eval()
    idx = torch.as_tensor(idx, device=inputs.device)
    k = idx.shape[0]
    out = []
    for s in range(0, idx.shape[1], batch_size):
        block = idx[:, s:s + batch_size]
        records = inputs[block.reshape(-1)]  # (K * b, C, H, W): each member's own batch
        local = torch.arange(len(records), device=inputs.device).view(k, -1)
        out.append(torch.stack([pack(apply_view(records, v), local).float() for v in views], 2))
    return torch.cat(out, 1).cpu()
