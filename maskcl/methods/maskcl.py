"""MaskCL's facts (the method: ``maskcl/training/methods/maskcl.py``).

Li et al., "MaskCL: Semantic Mask-Driven Contrastive Learning for Unsupervised Person
Re-Identification with Clothes Change", arXiv 2305.13600; official code MingkunLishigure/SiCL. The
schema's ``train`` defaults are this code's (``CMC.py`` argparse defaults, ``run_code.sh`` turning
refinement on), so its recipe adds nothing to them.
"""

from __future__ import annotations

from .facts import MethodFacts, Switch

__all__ = ["MASKCL"]

MASKCL = MethodFacts(
    name="maskcl",
    display_name="MaskCL (re-impl.)",
    short_name="MaskCL",
    citation="Li et al., arXiv 2305.13600; official code MingkunLishigure/SiCL",
    group="unsupervised",
    uses_masks=True,
    trains=True,
    switches=(
        Switch("crossview_loss", "Cross-view", True),            # the two cross-view losses (RGB <-> mask)
        Switch("neighbour_loss", "Neighbour", True),             # the cluster-neighbour loss on RGB and mask
        Switch("neighbour_weights", "Nbr weights", "official"),  # the official ~cos/C weights, or cosine
        Switch("neighbour_reduction", "Nbr reduction", "official"),  # batch-mean NLL, or per sample
        Switch("refine", "Refinement", True),                    # tight DBSCAN + sub-cluster test
        Switch("memory_refresh", "Memory refresh", False),       # re-extract the memories every epoch
        Switch("cluster_on", "Clustered on", "rgb"),             # the memory clustered: rgb, fused or concat
    ),
    recipe={},
    # read only by MaskCL's step and clustering: the neighbour curriculum, the focal loss, the memory softmax's
    # epsilon, the mask and fusion terms, the memories' first values, the refinement's tight eps and its test
    own_keys=("allknn", "focal_gamma", "softmax_eps", "mask_loss", "fusion_loss", "memory_init", "eps_gap",
              "ratio_cluster"),
)
