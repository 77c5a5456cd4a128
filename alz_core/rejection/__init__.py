"""The loss-rejection protocol and the gradient-equivalence check, for every branch kind.

* :mod:`.result`: the verdict and its reasons;
* :mod:`.problem`: the protocol every branch kind shares (its reference and early-exit SGD
  loops, the verdict rules);
* :mod:`.dense`: dense classification branches (seg, cls, mask) and their fused C kernel
  (:mod:`.native`); :mod:`.segmentation`: how the score reads boundary targets;
* :mod:`.detection`: the Faster / Mask R-CNN branches; :mod:`.heatmap`: pose heatmaps;
* :mod:`.parallel`: many candidates on worker processes; :mod:`.batched`: many candidates in
  lockstep on one device (CUDA);
* :mod:`.equivalence`: gradient fingerprints.

The names of the former module ``alz_core.rejection`` are re-exported here.
"""

from .dense import DenseRejectionProblem, with_config
from .parallel import check_many, default_workers
from .problem import RejectionProblem, SGDProblem, check, check_plain
from .result import RejectionResult, RejectReason, StopReason, Verdict
from .segmentation import BOUNDARY_MOVED, nearest_informative

__all__ = [
    "BOUNDARY_MOVED", "DenseRejectionProblem", "RejectReason", "RejectionProblem",
    "RejectionResult", "SGDProblem", "StopReason", "Verdict", "check", "check_many",
    "check_plain", "default_workers", "nearest_informative", "with_config",
]
