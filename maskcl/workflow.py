"""Glue between Snakemake's ``snakemake`` object and the library.

Each adapter in ``workflow_scripts/`` calls ``run_job(main, snakemake)``: logging goes to the rule's
log file (and stderr), a ``MaskCLError`` becomes one clear line and exit status 1, and any other
exception keeps its traceback in the log because it is a bug.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, Callable, Optional

from .errors import MaskCLError

__all__ = ["setup_logging", "run_job"]


def setup_logging(log_path: Optional[str] = None, level: int = logging.INFO) -> logging.Logger:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(level)
    return logging.getLogger("maskcl")


def run_job(main: Callable[[Any], None], smk: Any) -> None:
    """Run ``main(smk)`` with logging set up; user errors exit 1 with a single line."""
    log_path = smk.log[0] if len(smk.log) else None
    logger = setup_logging(log_path)
    try:
        main(smk)
    except MaskCLError as e:
        line = f"ERROR: {e}"
        logger.error("%s", e)
        print(line, file=sys.stderr, flush=True)
        sys.exit(1)
    except BaseException:
        logger.error("unexpected failure (a bug, please report it):\n%s", traceback.format_exc())
        raise
