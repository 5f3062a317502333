"""The ``Protocol`` record: one evaluation protocol of a dataset.

It lives beside the dataset classes (not in ``maskcl.evaluation``) because which protocols a dataset
has, and how the report describes them, are facts about the dataset: each ``ReIDDataset`` subclass
lists its own in ``protocols``. The evaluator (``maskcl.evaluation.protocols``) only runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

__all__ = ["Protocol"]


@dataclass(frozen=True)
class Protocol:
    """One query set against one gallery under one rule.

    ``camera_column`` is the manifest column used as the camera in the rule (``tracklet`` on
    DeepChange); ``None`` means queries and gallery never share a camera (Celeb: nothing is
    excluded). ``cameras`` keeps only these 0-based camids on both sides. ``cloth_changing_only``
    keeps only identities flagged ``cloth_changing`` on both sides. ``single_shot`` evaluates
    against repeated random galleries of one image per identity. ``needs_column`` offers the
    protocol only on manifests that have this column (a user's dataset has ``cc`` only where its
    labels give clothes ids, kept as ``outfit``); ``None``: always. ``short`` is the reader-facing
    summary the tables print beside every number of this protocol (``description``, the full
    definition, goes into ``metrics.json``; ``short`` never does).
    """

    name: str
    query_split: str
    gallery_split: str
    rule: str
    description: str
    camera_column: Optional[str] = "camid"
    cameras: Optional[Tuple[int, ...]] = None
    cloth_changing_only: bool = False
    single_shot: bool = False
    needs_column: Optional[str] = None
    short: str = field(kw_only=True)

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "description": self.description, "query_split": self.query_split,
                "gallery_split": self.gallery_split, "rule": self.rule, "camera_column": self.camera_column,
                "cameras": list(self.cameras) if self.cameras is not None else None,
                "cloth_changing_only": self.cloth_changing_only, "single_shot": self.single_shot}
