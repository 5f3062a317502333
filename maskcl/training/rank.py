"""Entry point of one DDP rank: ``python -m maskcl.training.rank JOB.json`` under torchrun.

``maskcl.training.launch`` writes ``JOB.json`` (the job's arguments, device kind, backend, threads)
and starts torchrun, which runs this module once per rank. The rank rebuilds the settings record
from the mapping it is sent (the job checked it once, before launching), joins the process group
(:class:`~maskcl.training.comm.DistComm`) and trains its share of the job
(:func:`maskcl.training.stage.run_train_job`). Its log records go to stdout as JSON lines for the job
to relay; a failure is reported in the job's folder as one line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import MaskCLError
from .comm import DistComm
from .launch import RECORD_PREFIX, set_parent_death_signal, write_rank_report
from .settings import TrainSettings
from .stage import run_train_job

__all__ = ["main"]

log = logging.getLogger(__name__)


class _JsonLines(logging.Handler):
    """A rank's log records as single JSON lines on stdout, re-emitted by ``launch``."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            if self.rank:
                msg = f"[rank {self.rank}] {msg}"
            sys.stdout.write(RECORD_PREFIX + json.dumps({"name": record.name, "level": record.levelno, "msg": msg})
                             + "\n")
            sys.stdout.flush()
        except Exception:  # pragma: no cover - logging must never kill a rank
            self.handleError(record)


def _setup_rank_logging(rank: int) -> None:
    """Rank 0 relays INFO and above, the others only warnings and errors."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(_JsonLines(rank))
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of one rank (``python -m maskcl.training.rank JOB.json`` under torchrun)."""
    parent = os.getppid()
    set_parent_death_signal()  # die with torchrun
    if os.getppid() != parent:  # torchrun died before the signal was armed
        return 1
    argv = sys.argv[1:] if argv is None else list(argv)
    args = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    _setup_rank_logging(rank)
    comm: Optional[DistComm] = None
    try:
        device = torch.device(f"cuda:{local_rank}") if args["device"] == "cuda" else torch.device("cpu")
        comm = DistComm(device, args["backend"])
        job = dict(args["job"])
        settings = TrainSettings.from_dict(job.pop("settings"))  # checked once by the job, not again here
        run_train_job(**job, settings=settings, threads=args["threads"],
                      progress=bool(args["progress"]) and rank == 0, comm=comm)
    except MaskCLError as e:
        write_rank_report(args["errors"], rank, True, str(e))
        log.error("%s", e)
        return 1
    except Exception as e:
        write_rank_report(args["errors"], rank, False, f"{type(e).__name__}: {e}")
        log.error("unexpected failure on rank %d (a bug, please report it)", rank, exc_info=True)
        return 1
    finally:
        if comm is not None:
            comm.close()
    return 0


if __name__ == "__main__":
    from maskcl.training.rank import main as _main  # the package's module, not a second __main__ copy

    sys.exit(_main())
