"""CACL's facts (the method: ``maskcl/training/methods/cacl.py``).

Li, Li, Guo, "Cluster-guided Asymmetric Contrastive Learning for Unsupervised Person Re-Identification",
IEEE TIP 2022 (arXiv 2106.07846); official code MingkunLishigure/CACL (``SIC.py``). Its repository's
``train`` values equal the schema's defaults (the official MaskCL code's, which grew out of it) except the
schedule: 80 epochs (``SIC.py`` 390) with the same ``--step-size 20``, so the rate drops after epochs 20,
40 and 60 (at 1/4, 2/4, 3/4 of the run, where MaskCL's 60 epochs drop at 1/3 and 2/3).
"""

from __future__ import annotations

from .facts import MethodFacts, Switch

__all__ = ["CACL"]

CACL = MethodFacts(
    name="cacl",
    display_name="CACL (re-impl.)",
    short_name="CACL",
    citation="Li, Li, Guo, IEEE TIP 2022 (arXiv 2106.07846); official code MingkunLishigure/CACL",
    group="unsupervised",
    uses_masks=False,
    trains=True,
    switches=(
        # SIC.py 144-151, 185: both memories are filled once and clustered without ever being re-extracted
        Switch("memory_refresh", "Memory refresh", False),
    ),
    recipe={"epochs": 80},
    # the focal prototype loss and its softmax epsilon (hm.py 92-141), the gray memory's first values
    # (SIC.py 144-151), the refinement's tight eps and its sub-cluster test (SIC.py 210-280, always on)
    own_keys=("focal_gamma", "softmax_eps", "memory_init", "eps_gap", "ratio_cluster"),
)
