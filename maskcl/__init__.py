"""MaskCL pipeline library: datasets, masks, clustering, models, training, evaluation, reporting.

Every stage of the Snakemake DAG is a thin adapter around a public function of this package,
so everything the workflow does can also be called (and tested) from Python. A trained model is
used outside the DAG with :func:`load_model` (``maskcl.inference``): ``maskcl.load_model("model.pt")
.embed(images)``.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    # lazy: importing the package (the workflow's config checks) must not import torch
    if name == "load_model":
        from .inference import load_model

        return load_model
    raise AttributeError(f"module 'maskcl' has no attribute {name!r}")
