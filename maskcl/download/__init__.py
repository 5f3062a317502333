"""Stage 1: fetch, verify and extract (or generate) a dataset, then write its manifest.

One module per concept: ``http`` (resumable HTTP download with sha256), ``extract`` (safe archive
extraction) and ``stage`` (``prepare_dataset``: what to do with a configured source, and the
manifest, statistics and ``dataset.json`` it writes). The public names are re-exported here so that
``from maskcl.download import prepare_dataset`` keeps working.
"""

from __future__ import annotations

from .extract import EXTRACT_MARKER, safe_extract
from .http import fetch_url, sha256_file
from .stage import PreparedDataset, check_images, prepare_dataset

__all__ = ["fetch_url", "safe_extract", "sha256_file", "check_images", "prepare_dataset", "PreparedDataset",
           "EXTRACT_MARKER"]
