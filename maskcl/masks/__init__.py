"""Stage 2, semantic masks: the SCHP parser, pluggable mask sources, the resumable parse stage and
the mask-quality report.

* ``schp_net`` / ``checkpoint`` / ``schp``: SCHP (AugmentCE2P) in plain PyTorch, strict loading of
  the official LIP / ATR / Pascal checkpoints, and the official extractor's pre/post-processing.
* ``sources``: ``MASK_SOURCES`` (``schp``, ``groundtruth``, ``mediapipe``) and how to add one.
* ``parse``: ``parse_dataset`` writes ``labels/``, ``silhouette/`` and ``parts/`` PNGs per image,
  resumes after a kill, and writes ``index.csv``.
* ``index``: ``read_mask_index`` and the check that a mask belongs to its image (size, mode,
  values), made by every reader of the masks.
* ``quality``: silhouette IoU and LIP mIoU of every source against ground-truth parsing.
"""

from .affine import invert_affine, letterbox_affine, warp_affine
from .checkpoint import SCHP_VARIANTS, SCHPVariant, check_state_dict, load_schp, manifest_shapes, read_state_dict
from .index import MASK_MODES, check_index_masks, check_mask_file, load_mask, read_mask_index
from .labels import ATR, BINARY, LABEL_SETS, LIP, PASCAL, LabelSet, voc_palette
from .mediapipe_source import MediaPipeSource, mediapipe_available
from .outputs import MASK_KINDS, MaskPaths, check_masks, mask_paths, write_masks
from .parse import INDEX_COLUMNS, ParseResult, parse_dataset
from .quality import mask_quality, quality_markdown, write_quality_report
from .schp import SCHPParser, SCHPSource
from .schp_net import ABN, AugmentCE2P, build_schp
from .sources import (MASK_SOURCES, GroundTruthSource, ImageReadError, MaskItem, MaskSource,
                      build_mask_source, read_image)

__all__ = [
    "MASK_SOURCES", "MaskSource", "MaskItem", "build_mask_source", "GroundTruthSource", "SCHPSource",
    "MediaPipeSource", "mediapipe_available", "ImageReadError", "read_image",
    "parse_dataset", "ParseResult", "INDEX_COLUMNS",
    "MASK_MODES", "read_mask_index", "check_index_masks", "check_mask_file", "load_mask",
    "MASK_KINDS", "MaskPaths", "mask_paths", "write_masks", "check_masks",
    "mask_quality", "quality_markdown", "write_quality_report",
    "AugmentCE2P", "ABN", "build_schp", "SCHPParser", "SCHP_VARIANTS", "SCHPVariant", "load_schp",
    "read_state_dict", "check_state_dict", "manifest_shapes",
    "letterbox_affine", "invert_affine", "warp_affine",
    "LabelSet", "LABEL_SETS", "LIP", "ATR", "PASCAL", "BINARY", "voc_palette",
]
