"""Pseudo-labels: exact kNN, sparse k-reciprocal Jaccard distance, DBSCAN, MaskCL's refinement and
pseudo-label quality. See ``docs/clustering.md`` for the algorithm, its variants and its cost.
``reciprocal`` is the k-reciprocal core the evaluation's re-ranking shares."""

from .jaccard import (K1_SLICINGS, JaccardGraph, build_jaccard_graph, jaccard_distance,
                      neighbour_columns)
from .knn import KNN_BACKENDS, KNNResult, knn_search
from .pseudo_labels import (OUTLIER_POLICIES, ClusteringResult, apply_outlier_policy, cluster,
                            cluster_with_distances, dbscan)
from .reciprocal import k_reciprocal_support, query_expansion, reciprocal_sets
from .quality import LabelAgreement, PseudoLabelQuality, label_agreement, pseudo_label_quality
from .refinement import PAIR_RULES, RefinementResult, refine_clusters

__all__ = [
    "KNN_BACKENDS", "KNNResult", "knn_search",
    "K1_SLICINGS", "JaccardGraph", "build_jaccard_graph", "jaccard_distance", "neighbour_columns",
    "k_reciprocal_support", "query_expansion", "reciprocal_sets",
    "OUTLIER_POLICIES", "ClusteringResult", "cluster", "cluster_with_distances", "dbscan",
    "apply_outlier_policy",
    "PAIR_RULES", "RefinementResult", "refine_clusters",
    "LabelAgreement", "PseudoLabelQuality", "label_agreement", "pseudo_label_quality",
]
