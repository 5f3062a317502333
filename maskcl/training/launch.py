"""Launching a DDP training job: ``train.world_size`` torchrun ranks started and watched from the job.

:func:`launch` runs in the Snakemake job (never for ``world_size`` 1): it claims the GPUs, starts
``python -m torch.distributed.run --standalone -m maskcl.training.rank``, relays the ranks' log records
into the job's log, and turns a rank's :class:`~maskcl.errors.MaskCLError` into one line. It also
holds the wire protocol with the ranks (log-record prefix, error reports, parent-death signal) that
``maskcl.training.rank`` uses. How the ranks compute what DataParallel computes is
``maskcl.training.comm``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

import torch

from ..errors import ConfigError, MaskCLError
from .settings import TrainSettings

__all__ = ["RANK_MODULE", "RECORD_PREFIX", "launch", "read_rank_reports", "set_parent_death_signal",
           "write_rank_report"]

log = logging.getLogger(__name__)

#: The module torchrun runs in every rank (``python -m``).
RANK_MODULE = "maskcl.training.rank"
#: Prefix of a rank's log record on its stdout (one JSON object per line); anything else is relayed as is.
RECORD_PREFIX = "\x1emaskcl-log "


def _plan_devices(s: TrainSettings) -> Tuple[str, Dict[str, str], str]:
    """(device kind, environment additions, description) for the ranks; claims W GPUs when on CUDA."""
    from ..devices import claim_gpu, default_lock_dir, select_device, visible_gpu_ids

    w = s.world_size
    if s.device == "cpu":
        return "cpu", {}, f"{w} processes on the CPU (as configured)"
    n = torch.cuda.device_count()
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    mask_note = f"CUDA_VISIBLE_DEVICES={mask!r}" if mask is not None else "CUDA_VISIBLE_DEVICES unset"
    if n == 0:
        select_device(s.device, key="train.device")  # the single-GPU rules: raises unless auto without a GPU
        log.warning("train.world_size is %d but no GPU is visible (%s): %d processes on the CPU", w, mask_note, w)
        return "cpu", {}, f"{w} processes on the CPU (auto; no GPU visible)"
    if n < w:
        raise ConfigError(f"config train.world_size is {w} but only {n} GPU(s) are visible ({mask_note}); grant "
                          f"{w} GPUs to the job (snakemake --resources gpu=N, SLURM) or lower train.world_size")
    ids = visible_gpu_ids(n)
    lock_dir = default_lock_dir()
    claimed: List[str] = []
    for _ in range(w):  # one lock per GPU, so concurrent jobs get disjoint GPUs (maskcl.devices)
        free = [i for i in ids if i not in claimed]
        claimed.append(claim_gpu(free, lock_dir=lock_dir).physical_id)
    if any(c.startswith("unlisted") for c in claimed):
        raise ConfigError(f"torch sees {n} GPUs but {mask_note} lists fewer; list every GPU the job may use")
    return "cuda", {"CUDA_VISIBLE_DEVICES": ",".join(claimed)}, (
        f"{w} GPUs {','.join(claimed)} (claimed, locks in {lock_dir}; {mask_note})")


def set_parent_death_signal() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM this process when its parent dies, even by SIGKILL.

    Used twice: the job process → torchrun (which then stops its ranks), and torchrun → each rank,
    because torchrun starts every rank in a session of its own, so killing the job's process group
    would otherwise leave the ranks training and writing checkpoints.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _relay(line: str, last: List[Any]) -> None:
    """Re-emit a rank's log record under its own logger and level (continuation lines keep the last)."""
    if line.startswith(RECORD_PREFIX):
        try:
            rec = json.loads(line[len(RECORD_PREFIX):])
            last[:] = [rec["name"], int(rec["level"])]
            logging.getLogger(rec["name"]).log(int(rec["level"]), "%s", rec["msg"])
            return
        except (ValueError, KeyError, TypeError):
            pass
    logging.getLogger(last[0]).log(last[1], "%s", line)


def _pump(src: Any, tail: Deque[bytes]) -> None:
    """Pass torchrun's stderr (rank 0's progress bars, torchrun's report) through; keep its tail."""
    fd = src.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        tail.append(chunk)
        try:
            sys.stderr.write(chunk.decode("utf-8", errors="replace"))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def write_rank_report(folder: str, rank: int, user_error: bool, message: str) -> None:
    """A failing rank's one-line report (``rank<R>.json`` in the job's folder), written atomically."""
    path = Path(folder) / f"rank{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, "user_error": user_error, "message": message}), encoding="utf-8")
    os.replace(tmp, path)


def read_rank_reports(folder: Path) -> List[Dict[str, Any]]:
    """The failing ranks' reports, in rank order."""
    errors = sorted(Path(folder).glob("rank*.json"), key=lambda p: int(p.stem[4:]))
    return [json.loads(p.read_text(encoding="utf-8")) for p in errors]


def launch(job: Mapping[str, Any], settings: TrainSettings, *, threads: Optional[int] = None,
           progress: bool = True) -> None:
    """Run ``job`` as ``settings.world_size`` torchrun ranks (``maskcl.training.rank``) and wait for them.

    Parameters
    ----------
    job : mapping
        JSON-serialisable keyword arguments of :func:`maskcl.training.stage.train_stage` (paths,
        settings mapping, seed, outputs, state folder), without ``threads``/``progress``; each rank
        rebuilds the settings record from the mapping and runs its share of the job.
    settings : TrainSettings
        The parsed settings (world size, device, backend), already checked by
        :func:`~maskcl.training.settings.check_settings` (the ranks do not check them again).
    threads : int, optional
        CPU threads of the whole job; each rank gets ``threads // world_size`` (at least 1).
    progress : bool
        Show rank 0's progress bars (on this process's stderr).

    Raises
    ------
    ConfigError
        Visible GPUs (or a backend) that cannot host ``world_size`` ranks.
    MaskCLError
        A rank stopped on bad input: that rank's one-line message.
    RuntimeError
        A rank crashed otherwise (its traceback is relayed into this job's log) or was killed.
    """
    w = settings.world_size
    kind, env_add, where = _plan_devices(settings)
    backend = settings.dist_backend if settings.dist_backend != "auto" else ("nccl" if kind == "cuda" else "gloo")
    if kind == "cpu" and backend == "nccl":
        raise ConfigError("config train.dist_backend is nccl but no GPU is used; use auto or gloo")
    per_rank = max(1, (threads or os.cpu_count() or 1) // w)
    tmp = Path(tempfile.mkdtemp(prefix="maskcl-ddp-"))
    try:
        args = {"job": dict(job), "device": kind, "backend": backend, "threads": per_rank, "progress": progress,
                "errors": str(tmp)}
        (tmp / "job.json").write_text(json.dumps(args), encoding="utf-8")
        env = {**os.environ, **env_add, "OMP_NUM_THREADS": str(per_rank), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={w}",
               "--max-restarts=0", "-m", RANK_MODULE, str(tmp / "job.json")]
        log.info("DDP: %s, backend %s, %d thread(s) per rank; global batch %d = %d per rank", where, backend,
                 per_rank, settings.batch_size, settings.batch_size // w)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                preexec_fn=set_parent_death_signal)
        assert proc.stdout is not None and proc.stderr is not None
        tail: Deque[bytes] = collections.deque(maxlen=64)
        pump = threading.Thread(target=_pump, args=(proc.stderr, tail), daemon=True)
        pump.start()
        try:
            last: List[Any] = [__name__, logging.INFO]
            for raw in proc.stdout:
                _relay(raw.decode("utf-8", errors="replace").rstrip("\n"), last)
            rc = proc.wait()
            pump.join(timeout=10)
        finally:
            if proc.poll() is None:  # interrupted while waiting: stop torchrun and its ranks
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if rc != 0:
            reports = read_rank_reports(tmp)
            user = [r for r in reports if r["user_error"]]
            if user:
                raise MaskCLError(user[0]["message"])
            # torchrun's own report (exit codes, signals) and anything a crashing rank printed
            log.error("last output of torchrun and its ranks (stderr):\n%s",
                      b"".join(tail).decode("utf-8", errors="replace").strip()[-8000:])
            first = f" (rank {reports[0]['rank']}: {reports[0]['message']})" if reports else ""
            raise RuntimeError(f"DDP training with {w} processes failed, torchrun exit status {rc}{first}; "
                               f"the ranks' tracebacks are in the log above")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
