"""Per-dataset evaluation protocols: which query and gallery images, which rule, which "camera".

Every protocol has a stable name used in ``metrics.json`` and the tables; docs/protocols.md gives
each exact definition and where it comes from (datasets-and-protocols.md §2.3–2.7 and
maskcl-method.md §4). ``run_protocols`` evaluates all protocols of a dataset from one feature
matrix aligned with the manifest, computing each distinct query × gallery distance only once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..datasets import DATASETS, report_order
from ..datasets.protocol import Protocol
from .distance import distance_chunks
from ..errors import EvaluationError
from .metrics import RankingResult, evaluate_chunks, match_flags
from .rerank import rerank_chunks
from .settings import EvalSettings

__all__ = ["Protocol", "ProtocolResult", "PROTOCOLS", "HEADLINE", "list_protocols", "get_protocol",
           "headline_protocol", "comparison_protocols", "required_splits", "required_rows", "single_shot_galleries",
           "run_protocols"]

log = logging.getLogger(__name__)


# The protocols are facts about each dataset and live on its class (``ReIDDataset.protocols`` and
# ``headline_protocol``); these two tables are views of the registry, in report order.

#: Dataset name → its protocols, in report order.
PROTOCOLS: Dict[str, Tuple[Protocol, ...]] = {name: DATASETS.get(name).protocols for name in report_order()}

#: Dataset name → the protocol quoted as its headline number (and saved in ranks.npz first).
HEADLINE: Dict[str, str] = {name: DATASETS.get(name).headline_protocol for name in report_order()}


def list_protocols(dataset: str, manifest: Optional[pd.DataFrame] = None) -> Tuple[Protocol, ...]:
    """The protocols of ``dataset`` (raises ``EvaluationError`` listing known datasets).

    With ``manifest``, only those it offers: a protocol with ``needs_column`` is left out where the
    manifest lacks that column (a user's dataset without clothes ids has no ``cc``).
    """
    try:
        plist = PROTOCOLS[dataset]
    except KeyError:
        raise EvaluationError(f"no evaluation protocols for dataset {dataset!r}; known: "
                              f"{', '.join(sorted(PROTOCOLS))}") from None
    if manifest is None:
        return plist
    return tuple(p for p in plist if p.needs_column is None or p.needs_column in manifest.columns)


def get_protocol(dataset: str, name: str, manifest: Optional[pd.DataFrame] = None) -> Protocol:
    """The protocol ``name`` of ``dataset`` (one ``manifest`` offers, where given)."""
    for p in list_protocols(dataset):
        if p.name != name:
            continue
        if manifest is not None and p not in list_protocols(dataset, manifest):
            raise EvaluationError(f"protocol {dataset}/{name} needs the manifest column {p.needs_column!r}, which "
                                  f"this manifest lacks (for {dataset}: labels without clothes ids)")
        return p
    known = ", ".join(p.name for p in list_protocols(dataset))
    raise EvaluationError(f"dataset {dataset!r} has no protocol {name!r}; known: {known}")


def headline_protocol(dataset: str) -> str:
    list_protocols(dataset)
    return HEADLINE[dataset]


def comparison_protocols(dataset: str) -> Tuple[str, ...]:
    """The protocols the field's comparison table prints for ``dataset``: the headline, then its companion."""
    list_protocols(dataset)
    return DATASETS.get(dataset).comparison_protocols


def required_splits(dataset: str) -> Tuple[str, ...]:
    """Manifest splits whose features ``run_protocols`` needs, in first-use order."""
    out: List[str] = []
    for p in list_protocols(dataset):
        for s in (p.query_split, p.gallery_split):
            if s not in out:
                out.append(s)
    return tuple(out)


def required_rows(dataset: str, manifest: pd.DataFrame) -> np.ndarray:
    """Positional manifest rows (ascending) of the required splits: extract features for exactly these."""
    _check_columns(manifest, ("split",))
    return np.flatnonzero(manifest["split"].isin(required_splits(dataset)).to_numpy())


def single_shot_galleries(gallery_pids: Any, trials: int, seed: int) -> List[np.ndarray]:
    """``trials`` draws of one gallery position per identity (sorted positions), reproducible from ``seed``.

    Identities are visited in ascending pid order and each draw picks uniformly among that
    identity's images, so the draws depend only on the gallery labels and the seed.
    """
    pids = np.asarray(gallery_pids)
    order = np.argsort(pids, kind="stable")
    _, start, counts = np.unique(pids[order], return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)
    return [np.sort(order[start + rng.integers(0, counts)]) for _ in range(int(trials))]


@dataclass
class ProtocolResult:
    """Result of one protocol: positions are manifest row indices.

    Multi-shot protocols fill ``result`` and the top-k lists; single-shot ones fill ``trials``
    (one ``RankingResult`` per drawn gallery) and ``trial_gallery_rows``.
    """

    dataset: str
    protocol: Protocol
    query_rows: np.ndarray
    gallery_rows: np.ndarray
    num_query_ids: int
    num_gallery_ids: int
    result: Optional[RankingResult] = None
    topk_rows: Optional[np.ndarray] = None       # (Q, k) manifest rows of the first k gallery items
    topk_flags: Optional[np.ndarray] = None      # (Q, k) int8: 1 good, 2 junk, 0 other identity
    trials: List[RankingResult] = field(default_factory=list)
    trial_gallery_rows: List[np.ndarray] = field(default_factory=list)
    seed: Optional[int] = None

    @property
    def name(self) -> str:
        return self.protocol.name

    def summary(self, max_rank: int = 50, ranks: Sequence[int] = (1, 5, 10, 20)) -> Dict[str, Any]:
        """JSON-ready metrics: mAP, mINP, rank-k, the first ``max_rank`` CMC values and counts.

        Single-shot protocols report the mean over draws plus ``<metric>_std`` (sample standard
        deviation, 0 for one draw) and the per-draw values.
        """
        out: Dict[str, Any] = self.protocol.describe()
        out.update(num_query_ids=self.num_query_ids, num_gallery_ids=self.num_gallery_ids)
        if not self.protocol.single_shot:
            assert self.result is not None
            out.update(self.result.to_dict(max_rank=max_rank, ranks=ranks))
            return out
        per = [t.to_dict(max_rank=max_rank, ranks=ranks) for t in self.trials]
        keys = ["mAP", "mINP"] + [f"rank{k}" for k in ranks]
        for key in keys:
            vals = np.array([np.nan if d[key] is None else d[key] for d in per], np.float64)
            out[key] = _nanless(np.mean(vals)) if vals.size else None
            out[f"{key}_std"] = _nanless(np.std(vals, ddof=1)) if vals.size > 1 else (0.0 if vals.size else None)
        cmcs = np.array([t.cmc[:max_rank] for t in self.trials], np.float64)
        out["cmc"] = [_nanless(v) for v in cmcs.mean(axis=0)] if len(self.trials) else []
        first = self.trials[0] if self.trials else None
        out.update(num_queries=int(self.query_rows.size),
                   num_gallery=first.num_gallery if first else 0,
                   num_gallery_pool=int(self.gallery_rows.size),
                   num_valid_queries=first.num_valid_queries if first else 0,
                   num_skipped_queries=first.num_skipped_queries if first else 0,
                   num_trials=len(self.trials), seed=self.seed,
                   trials=[{k: d[k] for k in keys + ["num_gallery", "num_valid_queries"]} for d in per])
        return out

    def __getitem__(self, key: str) -> Any:
        return self.summary()[key]


def _nanless(x: float) -> Optional[float]:
    x = float(x)
    return None if np.isnan(x) else x


def _check_columns(manifest: pd.DataFrame, cols: Iterable[str]) -> None:
    missing = [c for c in cols if c not in manifest.columns]
    if missing:
        raise EvaluationError(f"manifest lacks column(s) {', '.join(missing)}; rebuild it with the download stage")


def _select(manifest: pd.DataFrame, protocol: Protocol, side: str) -> np.ndarray:
    split = protocol.query_split if side == "query" else protocol.gallery_split
    mask = manifest["split"].to_numpy() == split
    if not mask.any():
        raise EvaluationError(f"manifest has no {split!r} rows, needed by protocol {protocol.name!r}")
    if protocol.cameras is not None:
        mask &= np.isin(manifest["camid"].to_numpy(), protocol.cameras)
    if protocol.cloth_changing_only:
        mask &= manifest["cloth_changing"].to_numpy().astype(bool)
    return np.flatnonzero(mask)


def _cameras(manifest: pd.DataFrame, protocol: Protocol, rows: np.ndarray, side: str) -> np.ndarray:
    if protocol.camera_column is None:   # queries and gallery never share a camera
        return np.full(rows.size, 0 if side == "query" else 1, np.int64)
    return manifest[protocol.camera_column].to_numpy()[rows].astype(np.int64)


class _Features:
    """Feature rows looked up by manifest row, with a clear error for rows never extracted."""

    def __init__(self, features: Any, feature_rows: Optional[Any], num_rows: int) -> None:
        f = features.detach().cpu().numpy() if hasattr(features, "detach") else np.asarray(features)
        if f.ndim != 2:
            raise EvaluationError(f"features must be 2-D (rows × dim), got shape {f.shape}")
        if feature_rows is None:
            if f.shape[0] != num_rows:
                raise EvaluationError(f"features have {f.shape[0]} rows but the manifest has {num_rows}; pass "
                                      f"feature_rows= (the manifest rows they belong to) or align them")
            self.lookup = np.arange(num_rows)
        else:
            fr = np.asarray(feature_rows, np.int64)
            if fr.shape != (f.shape[0],):
                raise EvaluationError(f"feature_rows has {fr.size} entries but there are {f.shape[0]} feature rows")
            if fr.size and (fr.min() < 0 or fr.max() >= num_rows):
                raise EvaluationError(f"feature_rows must index manifest rows 0..{num_rows - 1}")
            self.lookup = np.full(num_rows, -1, np.int64)
            self.lookup[fr] = np.arange(fr.size)
        self.features = f

    def take(self, rows: np.ndarray, what: str) -> np.ndarray:
        idx = self.lookup[rows]
        if (idx < 0).any():
            raise EvaluationError(f"no features for {int((idx < 0).sum())} {what} rows (e.g. manifest row "
                                  f"{int(rows[idx < 0][0])}); extract features for required_splits(dataset)")
        out = self.features[idx]
        if not np.isfinite(out).all():
            bad = int(rows[~np.isfinite(out).all(axis=1)][0])
            raise EvaluationError(f"non-finite features for {what} (manifest row {bad}); extract features for "
                                  f"required_splits(dataset)")
        return out


def _chunks(qf: np.ndarray, gf: np.ndarray, s: EvalSettings, chunk_size: Optional[int],
            device: Any) -> Iterator[Tuple[int, np.ndarray]]:
    if bool(s.rerank):
        return rerank_chunks(qf, gf, metric=s.metric, k1=int(s.rerank_k1), k2=int(s.rerank_k2),
                             lambda_value=float(s.rerank_lambda), chunk_size=chunk_size, device=device)
    return distance_chunks(qf, gf, metric=s.metric, chunk_size=chunk_size, device=device)


def run_protocols(dataset: str, manifest: pd.DataFrame, features: Any, *, settings: Optional[EvalSettings] = None,
                  feature_rows: Any = None, protocols: Optional[Sequence[str]] = None,
                  chunk_size: Optional[int] = None, device: Any = "cpu") -> Dict[str, ProtocolResult]:
    """Evaluate every protocol of ``dataset`` (or the named ones) from one feature matrix.

    Parameters
    ----------
    dataset : str
        Registry name (``ltcc``, ``synthcc``, ``prcc``, ``vcclothes``, ``celebreid``,
        ``celebreid_light``, ``deepchange``, ``custom``).
    manifest : pandas.DataFrame
        The download stage's manifest (columns ``split, pid, camid, clothes_id`` plus the extras the
        protocols use: ``cloth_changing``, ``tracklet``). Rows are addressed by position.
    features : array-like, shape (R, d)
        One row per manifest row (``feature_rows=None``), or per entry of ``feature_rows``. Rows
        of splits no protocol uses may be absent or NaN; see ``required_rows``.
    settings : EvalSettings, optional
        The ``evaluate`` settings; default the schema's. Used here: ``seed`` (of the single-shot
        gallery draws, PRCC), ``metric``, ``rerank`` with ``rerank_k1``, ``rerank_k2`` and
        ``rerank_lambda``, ``single_shot_trials`` (number of draws), ``topk`` (length of the saved
        top-k gallery lists of multi-shot protocols). Its ``device`` is a spec, not used here.
    feature_rows : array-like of int, shape (R,), optional
        The manifest row of each feature row.
    protocols : sequence of str, optional
        Subset of protocol names; default every protocol the manifest offers (``list_protocols``).
    chunk_size : int, optional
        Query rows per distance block (memory bound); default about 128 MiB of distances.
    device : str or torch.device
        Where distances are computed (resolved; not ``auto``).

    Returns
    -------
    dict of str → ProtocolResult
        In the dataset's protocol order.

    Raises
    ------
    EvaluationError
        Unknown dataset or protocol, missing manifest columns or splits, missing or non-finite
        features for a needed row.
    """
    s = settings if settings is not None else EvalSettings.defaults()
    plist = list_protocols(dataset, manifest)
    if protocols is not None:
        plist = tuple(get_protocol(dataset, n, manifest) for n in protocols)
    if int(s.single_shot_trials) < 1:
        raise EvaluationError(f"single_shot_trials must be >= 1, got {s.single_shot_trials}")
    cols = {"split", "pid", "camid", "clothes_id"}
    cols |= {p.camera_column for p in plist if p.camera_column}
    cols |= {"cloth_changing" for p in plist if p.cloth_changing_only}
    _check_columns(manifest, sorted(cols))
    feats = _Features(features, feature_rows, len(manifest))
    out: Dict[str, ProtocolResult] = {}
    for members in _protocol_groups(dataset, manifest, plist).values():
        p0, qrows, grows = members[0]
        qf, gf = feats.take(qrows, p0.query_split), feats.take(grows, p0.gallery_split)
        labels = _Labels.of(manifest, p0, qrows, grows)
        evaluate = _single_shot if p0.single_shot else _multi_shot
        out.update(evaluate(dataset, members, qf, gf, labels, s, chunk_size, device))
    return {p.name: out[p.name] for p in plist}


_Member = Tuple[Protocol, np.ndarray, np.ndarray]  # a protocol with its query and gallery manifest rows


@dataclass(frozen=True)
class _Labels:
    """The identities, cameras and outfits of a protocol group's query and gallery rows, in row order."""

    q_pids: np.ndarray
    g_pids: np.ndarray
    q_cams: np.ndarray
    g_cams: np.ndarray
    q_clothes: np.ndarray
    g_clothes: np.ndarray

    @classmethod
    def of(cls, manifest: pd.DataFrame, p: Protocol, qrows: np.ndarray, grows: np.ndarray) -> "_Labels":
        pids = manifest["pid"].to_numpy().astype(np.int64)
        clothes = manifest["clothes_id"].to_numpy().astype(np.int64)
        return cls(pids[qrows], pids[grows], _cameras(manifest, p, qrows, "query"),
                   _cameras(manifest, p, grows, "gallery"), clothes[qrows], clothes[grows])

    def args(self) -> Tuple[np.ndarray, ...]:
        """In the order ``evaluate_chunks`` and ``_topk_flags`` take them."""
        return self.q_pids, self.g_pids, self.q_cams, self.g_cams, self.q_clothes, self.g_clothes

    def gallery_subset(self, d: np.ndarray) -> "_Labels":
        return _Labels(self.q_pids, self.g_pids[d], self.q_cams, self.g_cams[d], self.q_clothes, self.g_clothes[d])


def _protocol_groups(dataset: str, manifest: pd.DataFrame, plist: Sequence[Protocol]
                     ) -> Dict[Tuple[Any, ...], List[_Member]]:
    """The protocols grouped so that one ranking serves all that share queries, gallery and cameras."""
    groups: Dict[Tuple[Any, ...], List[_Member]] = {}
    for p in plist:
        qrows, grows = _select(manifest, p, "query"), _select(manifest, p, "gallery")
        if qrows.size == 0 or grows.size == 0:
            raise EvaluationError(f"protocol {dataset}/{p.name} selects {qrows.size} queries and {grows.size} "
                                  f"gallery images; check the manifest")
        key = (p.single_shot, p.camera_column, p.query_split, p.gallery_split, p.cameras, p.cloth_changing_only)
        groups.setdefault(key, []).append((p, qrows, grows))
    return groups


def _multi_shot(dataset: str, members: Sequence[_Member], qf: np.ndarray, gf: np.ndarray, labels: _Labels,
                s: EvalSettings, chunk_size: Optional[int], device: Any) -> Dict[str, ProtocolResult]:
    """One ranking of the whole gallery, scored under each member's rule, with its saved top-k lists."""
    _, qrows, grows = members[0]
    log.info("%s: %d queries × %d gallery (%s)", dataset, qrows.size, grows.size,
             ", ".join(p.name for p, _, _ in members))
    ev = evaluate_chunks(_chunks(qf, gf, s, chunk_size, device), *labels.args(), rules=[p.rule for p, _, _ in members],
                         topk=int(s.topk))
    out = {}
    for p, _, _ in members:
        flags = _topk_flags(ev.topk, p.rule, *labels.args()) if ev.topk is not None else None
        top_rows = np.where(ev.topk >= 0, grows[np.maximum(ev.topk, 0)], -1) if ev.topk is not None else None
        out[p.name] = ProtocolResult(dataset, p, qrows, grows, int(np.unique(labels.q_pids).size),
                                     int(np.unique(labels.g_pids).size), result=ev.results[p.rule],
                                     topk_rows=top_rows, topk_flags=flags)
    return out


def _single_shot(dataset: str, members: Sequence[_Member], qf: np.ndarray, gf: np.ndarray, labels: _Labels,
                 s: EvalSettings, chunk_size: Optional[int], device: Any) -> Dict[str, ProtocolResult]:
    """``single_shot_trials`` random one-image-per-identity galleries (seeded), each scored under every rule."""
    _, qrows, grows = members[0]
    seed = int(s.seed)
    draws = single_shot_galleries(labels.g_pids, int(s.single_shot_trials), seed)
    log.info("%s: %d queries × %d single-shot galleries of %d (%s)", dataset, qrows.size, len(draws),
             draws[0].size, ", ".join(p.name for p, _, _ in members))
    rules = [p.rule for p, _, _ in members]
    trials: Dict[str, List[RankingResult]] = {r: [] for r in rules}
    for d in draws:
        ev = evaluate_chunks(_chunks(qf, gf[d], s, chunk_size, device), *labels.gallery_subset(d).args(), rules=rules)
        for r in trials:
            trials[r].append(ev.results[r])
    return {p.name: ProtocolResult(dataset, p, qrows, grows, int(np.unique(labels.q_pids).size),
                                   int(np.unique(labels.g_pids).size), trials=trials[p.rule],
                                   trial_gallery_rows=[grows[d] for d in draws], seed=seed)
            for p, _, _ in members}


def _topk_flags(top: np.ndarray, rule: str, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray,
                g_cams: np.ndarray, q_clothes: np.ndarray, g_clothes: np.ndarray) -> np.ndarray:
    t = np.maximum(top, 0)
    same = (g_pids[t] == q_pids[:, None]) & (top >= 0)
    flags = match_flags(rule, g_cams[t] == q_cams[:, None], g_clothes[t] == q_clothes[:, None])
    return np.where(same, flags, 0).astype(np.int8)
