"""ClusterContrast's facts (the method: ``maskcl/training/methods/clustercontrast.py``).

Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification", arXiv 2103.11568; official
code alibaba/cluster-contrast-reid. Its recipe is the README's command (``-b 256 --num-instances 16
--momentum 0.1``, GeM pooling); its schedule is MaskCL's (docs/training.md, "ClusterContrast").
"""

from __future__ import annotations

from .facts import MethodFacts

__all__ = ["CLUSTERCONTRAST"]

CLUSTERCONTRAST = MethodFacts(
    name="clustercontrast",
    display_name="ClusterContrast (re-impl.)",
    short_name="ClusterContrast",
    citation="Dai et al., arXiv 2103.11568; official code alibaba/cluster-contrast-reid",
    group="unsupervised",
    uses_masks=False,
    trains=True,
    recipe={"batch_size": 256, "num_instances": 16, "momentum": 0.1, "pooling": "gem"},
)
