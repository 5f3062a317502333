"""Feature extraction for evaluation: the package's one extractor and image dataset.

Both live in ``maskcl.models.features`` (training extracts with the same code, importing it
downward); this module keeps the evaluation-side name. The defaults are evaluation's: features
L2-normalised, no flip, missing or unreadable images reported as one-line ``EvaluationError``.
"""

from __future__ import annotations

from ..models.features import ImageSet, extract_features

__all__ = ["ImageSet", "extract_features"]
