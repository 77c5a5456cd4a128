"""How the rejection score reads a segmentation on boundary targets (BIoU and BF1).

With ``target="boundary"`` (:class:`~alz_core.rejection.dense.DenseRejectionProblem`) ``y`` is
the labels' class boundaries, the targets the proxy trains on. Most pixels then have an all-zero
target: a loss gives their free logits little or no signal, and their argmax would be an
accident of the start. A network does not predict such pixels independently: it spreads what it
learns where the loss acts over the regions around. The score therefore reads every pixel's
prediction from the nearest pixel the loss moved (its logits moved by at least
:data:`BOUNDARY_MOVED` of the largest move in its image: a nearest-neighbour fill of the argmax
map, :func:`boundary_prediction`) before the metric compares it with the full labels. Where the
loss acts is the loss's own business: cross-entropy moves the boundary pixels, the paper's
Table 9 BF1 loss (``maxpool`` of ``y`` and ``yhat``) pixels next to them. A loss that drives
those pixels to their class fills each region with it and scores high (cross-entropy, Table 9's
BIoU and BF1 losses on their own metrics); one that pushes the wrong way, or ignores the target,
fills the regions with wrong or arbitrary classes and scores low.
"""

from __future__ import annotations

import torch

#: boundary targets: a pixel carries what the loss taught it if its logits moved by at least
#: this fraction of the largest move in its image (10 % and 50 % gave the same verdicts on the
#: paper's Table 9 losses, cross-entropy, wrong-way and target-free losses)
BOUNDARY_MOVED = 0.1


def nearest_informative(informative: torch.Tensor) -> torch.Tensor | None:
    """For each pixel, the flat index (within its image) of the nearest pixel where
    ``informative`` (B, H, W) is true (Euclidean; itself where it is true); ``None`` if every
    pixel is informative. An image without any informative pixel keeps its own pixels."""
    from scipy.ndimage import distance_transform_edt

    if bool(informative.all()):
        return None
    b, h, w = informative.shape
    out = torch.arange(h * w).repeat(b, 1)
    for i in range(b):
        mask = informative[i].numpy()
        if not mask.any():
            continue
        iy, ix = distance_transform_edt(~mask, return_distances=False, return_indices=True)
        out[i] = torch.from_numpy((iy * w + ix).reshape(-1)).long()
    return out


def boundary_prediction(pred: torch.Tensor, logits: torch.Tensor,
                        init_logits: torch.Tensor) -> torch.Tensor:
    """The argmax map ``pred`` (B, H, W) of ``logits`` with every pixel read from the nearest
    pixel whose logits moved from ``init_logits`` by at least :data:`BOUNDARY_MOVED` of the
    largest move in its image (see the module doc)."""
    move = (logits.float() - init_logits.to(logits.device)).abs().amax(1).cpu()
    top = move.flatten(1).amax(1).view(-1, 1, 1)
    fill = nearest_informative((move >= BOUNDARY_MOVED * top) & (top > 0))
    if fill is None:
        return pred
    return pred.flatten(1).gather(1, fill.to(pred.device)).view_as(pred)
