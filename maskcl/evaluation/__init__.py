"""Evaluation: exact ranking metrics, per-dataset protocols, features, re-ranking, output files.

- ``metrics``: CMC / mAP / mINP under the standard, cc and sc rules (``evaluate``,
  ``evaluate_features``, ``evaluate_chunks``), without sorting gallery rows.
- ``distance``: squared-Euclidean and cosine distances in chunk-invariant row blocks.
- ``protocols``: every dataset's protocols by stable name (docs/protocols.md), ``run_protocols``.
- ``features``: ``extract_features`` for any model callable.
- ``rerank``: sparse k-reciprocal re-ranking (Zhong et al. 2017).
- ``settings``: ``EvalSettings``, the config's ``evaluate`` section as one record (schema defaults).
- ``output`` / ``stage``: ``metrics.json``, ``ranks.npz``, provenance, ``evaluate_run``.
"""

from ..errors import EvaluationError
from .distance import METRICS, distance_chunks, l2_normalize, pairwise_distance
from .features import extract_features
from .metrics import RULES, ChunkedEvaluation, RankingResult, evaluate, evaluate_chunks, evaluate_features
from .output import METRICS_FORMAT, metrics_document, provenance, write_metrics_json, write_ranks
from .protocols import (HEADLINE, PROTOCOLS, Protocol, ProtocolResult, get_protocol, headline_protocol,
                        list_protocols, required_rows, required_splits, run_protocols, single_shot_galleries)
from .rerank import RERANK_DEFAULTS, k_reciprocal_rerank, rerank_chunks
from .settings import EvalSettings
from .stage import check_run_model, evaluate_checkpoint, evaluate_model, evaluate_run

__all__ = [
    "RULES", "METRICS", "EvaluationError", "RankingResult", "ChunkedEvaluation",
    "evaluate", "evaluate_chunks", "evaluate_features",
    "pairwise_distance", "distance_chunks", "l2_normalize",
    "extract_features",
    "k_reciprocal_rerank", "rerank_chunks", "RERANK_DEFAULTS",
    "Protocol", "ProtocolResult", "PROTOCOLS", "HEADLINE", "list_protocols", "get_protocol",
    "headline_protocol", "required_splits", "required_rows", "single_shot_galleries", "run_protocols",
    "METRICS_FORMAT", "provenance", "metrics_document", "write_metrics_json", "write_ranks",
    "EvalSettings", "evaluate_run", "evaluate_model", "evaluate_checkpoint", "check_run_model",
]
