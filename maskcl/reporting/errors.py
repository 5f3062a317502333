"""The reporting stage's user error: a missing, stale or malformed input file, named in one line."""

from __future__ import annotations

from ..errors import MaskCLError

__all__ = ["ReportingError"]


class ReportingError(MaskCLError):
    """A run folder, metrics file, log, index or published-numbers file cannot be reported."""
