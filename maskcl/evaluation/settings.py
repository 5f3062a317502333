"""The config's ``evaluate`` section as one frozen record, passed down whole.

Every default is written once, in ``maskcl/schemas/config.schema.yaml``: the fields below have no
defaults of their own and :meth:`EvalSettings.from_dict` starts from the schema's, so the record, the
config and the docs cannot drift apart. Unknown keys are refused with the list of known ones, as
``TrainSettings`` and ``PretrainSettings`` do. ``device`` is the config's device *spec* (``auto``,
``cpu``, ``cuda:N``); ``evaluate_checkpoint`` resolves it, and the functions below it take the
resolved device as their own argument.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from ..config import section_defaults, settings_from_dict

__all__ = ["EvalSettings"]


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation settings (see the schema's ``evaluate`` section for each meaning and default)."""

    flip: bool
    metric: str
    rerank: bool
    rerank_k1: int
    rerank_k2: int
    rerank_lambda: float
    single_shot_trials: int
    seed: int
    batch_size: int
    topk: int
    workers: int
    device: str

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]] = None) -> "EvalSettings":
        """The schema defaults overridden by ``values`` (a full or partial ``evaluate`` section)."""
        merged = section_defaults("evaluate")
        merged.update(dict(values or {}))
        return settings_from_dict(cls, merged, "evaluate")

    @classmethod
    def defaults(cls) -> "EvalSettings":
        """The schema's defaults, what every library entry point uses when given no settings."""
        return cls.from_dict({})

    def to_dict(self) -> Dict[str, Any]:
        """All fields, in the schema's order."""
        return dataclasses.asdict(self)

    def metrics_settings(self) -> Dict[str, Any]:
        """The ``settings`` block of ``metrics.json``: these keys, in this order, with these types."""
        return {"metric": self.metric, "rerank": bool(self.rerank), "rerank_k1": int(self.rerank_k1),
                "rerank_k2": int(self.rerank_k2), "rerank_lambda": float(self.rerank_lambda),
                "single_shot_trials": int(self.single_shot_trials), "seed": int(self.seed),
                "topk": int(self.topk)}
