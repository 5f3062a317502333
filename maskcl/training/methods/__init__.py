"""The training methods, one module each, registered against their facts (``maskcl.methods``).

- ``maskcl``: RGB + mask branches, fusion, three instance memories, clusters and their neighbours
  (``maskcl.py``);
- ``clustercontrast``: RGB only, a cluster-centroid memory re-initialised every epoch
  (``clustercontrast.py``);
- ``cacl``: RGB + grayscale-copy branches, two instance memories, asymmetric terms into the RGB
  branch (``cacl.py``);
- ``spcl``: RGB only, an instance (hybrid) memory, outliers and unreliable cluster members as singleton
  classes by a self-paced criterion (``spcl.py``);
- ``ise``: ClusterContrast plus support features towards the nearest other centroids and the
  label-preserving loss (``ise.py``);
- ``supervised``: the ClusterContrast loop with the true identities, an upper bound (``supervised.py``);
- ``untrained``: the initial network exported without a step, the reference (``untrained.py``).

Each module's class is registered by ``@register_method(<its facts>)`` beside it; importing it here
runs the registration (``tests/test_methods.py`` fails when a registered method has no class).
The engine builds a method as ``METHODS.build(name, settings, data, device)``.
"""

from __future__ import annotations

from .base import METHODS, MethodBase, backbone_of, register_method
from .cacl import CACLMethod
from .clustercontrast import ClusterContrastMethod
from .ise import ISEMethod
from .maskcl import MaskCLMethod
from .spcl import SpCLMethod
from .supervised import SupervisedMethod
from .untrained import UntrainedMethod

__all__ = ["METHODS", "MethodBase", "register_method", "backbone_of", "MaskCLMethod", "ClusterContrastMethod",
           "CACLMethod", "SpCLMethod", "ISEMethod", "SupervisedMethod", "UntrainedMethod"]
