"""SynthCC: a synthetic clothes-changing ReID dataset that runs the whole pipeline on a laptop CPU.

Identity lives in body shape, gait, hair and skin; clothes change colour, pattern and garment between
outfits (all drawn from one shared palette). Figures are posed mid-stride in 3-D, seen from the front,
back or side by cameras with their own backgrounds, optics and white balance, cropped like a
detector's box, and written in LTCC's layout with a pixel-aligned LIP label map per image.

``generate_synthcc(root, preset, seed, overrides)`` writes a dataset (idempotent, atomic);
``SynthCC`` (registry name ``synthcc``) loads it.
"""

from .config import HAIRSTYLES, PRESETS, SynthCCConfig, expected_counts, resolve_config
from .generate import GENERATOR_VERSION, generate_synthcc, render_spec
from .loader import SynthCC
from .palette import LABEL, LIP_LABELS
from .plan import DatasetPlan, ImageSpec, plan_dataset

__all__ = ["SynthCCConfig", "PRESETS", "HAIRSTYLES", "resolve_config", "expected_counts", "generate_synthcc",
           "render_spec", "GENERATOR_VERSION", "SynthCC", "LABEL", "LIP_LABELS", "DatasetPlan", "ImageSpec",
           "plan_dataset"]
