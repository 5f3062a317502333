"""MaskCL pipeline library: datasets, masks, clustering, models, training, evaluation, reporting.

Every stage of the Snakemake DAG is a thin adapter around a public function of this package,
so everything the workflow does can also be called (and tested) from Python.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
