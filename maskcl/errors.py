"""User-facing errors.

A ``MaskCLError`` is a mistake in the user's input (a path, a config key, a file), not a bug. Its
message is one line that names the file or key and says how to fix it; the workflow adapters print
that line and exit non-zero instead of showing a traceback.
"""

from __future__ import annotations

__all__ = ["MaskCLError", "ConfigError", "DatasetError", "DownloadError", "ChecksumError",
           "UnsafeArchiveError", "CheckpointError", "ImageReadError", "EvaluationError", "InferenceError", "ReportingError",
           "GpuBusyError"]


class MaskCLError(Exception):
    """Bad user input: one clear line naming the file or key and the fix."""


class ConfigError(MaskCLError):
    """A configuration value is missing or rejected."""


class DatasetError(MaskCLError):
    """A dataset root, layout or file name is wrong."""


class DownloadError(MaskCLError):
    """A dataset source could not be fetched."""


class ChecksumError(DownloadError):
    """A downloaded or local archive does not match its expected sha256."""


class UnsafeArchiveError(DownloadError):
    """An archive entry would be written outside the extraction target."""


class CheckpointError(MaskCLError):
    """A checkpoint file is missing, unsafe, or of another architecture."""


class ImageReadError(MaskCLError):
    """An input image (or ground-truth map) is missing, truncated or not an image."""


class EvaluationError(MaskCLError):
    """Evaluation inputs are inconsistent (shapes, labels, non-finite distances, unknown names)."""


class InferenceError(MaskCLError):
    """An input of a trained model used outside the DAG (``maskcl.inference``, the ``maskcl`` command) is wrong."""


class ReportingError(MaskCLError):
    """A run folder, metrics file, log, index or published-numbers file cannot be reported."""


class GpuBusyError(MaskCLError):
    """Every visible GPU stayed claimed by other jobs for the whole wait."""


class MaskError(ImageReadError):
    """A mask does not belong to its image (another size) or is not the kind of mask expected (mode, values)."""


__all__ += ["MaskError"]


class TruncatedArchiveError(DownloadError):
    """A download or archive ends before its own end (a connection closed early, an interrupted copy)."""


__all__ += ["TruncatedArchiveError"]
