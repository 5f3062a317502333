"""The supervised upper bound's facts (the method: ``maskcl/training/methods/supervised.py``).

The ClusterContrast loop with the true identity labels in place of the clusters: what an
unsupervised method could reach, always labelled as an upper bound and never as a competitor. It
trains with ClusterContrast's recipe.
"""

from __future__ import annotations

from .clustercontrast import CLUSTERCONTRAST
from .facts import MethodFacts

__all__ = ["SUPERVISED"]

SUPERVISED = MethodFacts(
    name="supervised",
    display_name="supervised (upper bound)",
    short_name="supervised bound",
    citation="the ClusterContrast loop (Dai et al., arXiv 2103.11568) trained with identity labels",
    group="supervised",
    uses_masks=False,
    trains=True,
    recipe=CLUSTERCONTRAST.recipe,
)
