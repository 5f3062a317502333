"""Multi-GPU training: one job, ``train.world_size`` processes, torchrun + DistributedDataParallel.

The official MaskCL code trains under ``nn.DataParallel``: one process scatters each batch of B into W
contiguous chunks, every GPU normalises BatchNorm over its own chunk, only chunk 0's running statistics
survive, and the memories see the whole batch. We reproduce exactly that with DDP, so that a W-rank
run equals a one-process run with ``bn_groups = W`` and the same global batch B:

- every rank draws the same global batch list from the seeded sampler and keeps its contiguous slice
  (rank r: positions [r·B/W, (r+1)·B/W)), DataParallel's scatter; augmentations are seeded per sample
  (``maskcl.training.data``), so a sample's view does not depend on which rank loads it;
- the networks (never the memories) are wrapped in DDP with forward buffer syncing, so BatchNorm
  running statistics follow rank 0 = chunk 0; every loss term is a batch mean, so DDP's gradient
  average is the full-batch gradient;
- memory updates are all-gathered in rank order (= global batch order) and applied on every rank, so
  the memories stay identical without ever being broadcast;
- clustering runs on rank 0 and its result is broadcast; eval-mode feature extraction is sharded over
  the ranks and all-gathered; the neighbour-loss gates are drawn for the global batch and sliced;
- rank 0 alone writes checkpoints, ``model.pt`` and the logs; every rank loads a checkpoint on resume;
  per-epoch losses are averaged over ranks (= global-batch means).

The single-process code paths call the same hooks on :class:`LocalComm`, where each is the identity,
so ``world_size = 1`` is untouched. :func:`launch` runs in the Snakemake job: it claims the GPUs,
starts ``python -m torch.distributed.run --standalone -m maskcl.training.ddp``, relays the ranks' log
records into the job's log, and turns a rank's :class:`~maskcl.errors.MaskCLError` into one line.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..errors import ConfigError, MaskCLError
from .features import extract_features
from .settings import TrainSettings

__all__ = ["LocalComm", "DistComm", "check_settings", "launch", "main"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: How long a rank waits in a collective (NCCL's default, 10 min, is shorter than a large clustering).
COLLECTIVE_TIMEOUT_MIN = 120
#: Prefix of a rank's log record on its stdout (one JSON object per line); anything else is relayed as is.
_RECORD = "\x1emaskcl-log "


# ------------------------------------------------------------------------------------------------
class LocalComm:
    """One process: the whole batch, no collectives. Every hook is the identity."""

    rank = 0
    world_size = 1
    is_main = True
    #: the rank's own device; None lets the engine select one (``maskcl.devices``)
    device: Optional[torch.device] = None

    def method_settings(self, s: TrainSettings) -> TrainSettings:
        """Settings the method is built with on this rank (its share of the BatchNorm groups)."""
        return s

    def forward(self, net: nn.Module, *inputs: Any) -> Any:
        """A training-mode forward of ``net`` that takes part in gradient averaging."""
        return net(*inputs)

    def extract(self, model: nn.Module, dataset: Dataset, **kw: Any) -> torch.Tensor:
        """Eval-mode N×D features of the whole ``dataset`` in dataset order (``extract_features``)."""
        return extract_features(model, dataset, **kw)

    def on_main(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` computed once (rank 0), its result given to every rank."""
        return fn(*args, **kw)

    def gather(self, *tensors: torch.Tensor) -> List[torch.Tensor]:
        """Each tensor's rows from every rank, concatenated in rank order (= global batch order)."""
        return list(tensors)

    def local_part(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous rows of a global-batch tensor (inverse of :meth:`gather`)."""
        return t

    def local_batch(self, batch: Sequence[T]) -> List[T]:
        """This rank's contiguous slice of a global batch (DataParallel's scatter)."""
        return list(batch)

    def mean(self, values: Dict[str, float]) -> Dict[str, float]:
        """Per-key mean over ranks (equal local batches: the global-batch mean)."""
        return values

    def barrier(self) -> None:
        """Wait until every rank gets here."""


class DistComm(LocalComm):
    """One rank of a torchrun job: process group, own device, and the collectives of the contract.

    Parameters
    ----------
    device : torch.device
        ``cuda:LOCAL_RANK`` (of the GPUs the launcher exposed through ``CUDA_VISIBLE_DEVICES``) or cpu.
    backend : str
        ``nccl`` or ``gloo``; the process group is initialised from torchrun's environment.
    """

    def __init__(self, device: torch.device, backend: str) -> None:
        import torch.distributed as dist

        self.dist = dist
        # rank 0 clusters (minutes on a large dataset) while the others wait in a broadcast
        timeout = timedelta(minutes=COLLECTIVE_TIMEOUT_MIN)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group(backend=backend, device_id=device, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        self.device = device
        self._wrapped: Dict[int, nn.Module] = {}

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()

    # -- settings and batches --------------------------------------------------------------------
    def method_settings(self, s: TrainSettings) -> TrainSettings:
        # W ranks × local groups = max(bn_groups, W) groups over the global batch, chunk 0 on rank 0
        return dataclasses.replace(s, bn_groups=max(s.bn_groups, self.world_size) // self.world_size)

    def _span(self, n: int) -> Tuple[int, int]:
        per = n // self.world_size
        return self.rank * per, (self.rank + 1) * per

    def local_batch(self, batch: Sequence[T]) -> List[T]:
        lo, hi = self._span(len(batch))
        return list(batch[lo:hi])

    def local_part(self, t: torch.Tensor) -> torch.Tensor:
        lo, hi = self._span(t.shape[0])
        return t[lo:hi]

    # -- networks ---------------------------------------------------------------------------------
    def forward(self, net: nn.Module, *inputs: Any) -> Any:
        ddp = self._wrapped.get(id(net))
        if ddp is None:
            ddp = self._wrap(net)
            self._wrapped[id(net)] = ddp
        return ddp(*inputs)

    def _wrap(self, net: nn.Module) -> nn.Module:
        """DDP around ``net``; built at its first training forward, i.e. after any checkpoint load."""
        from torch.nn.parallel import DistributedDataParallel

        kw: Dict[str, Any] = {}
        # BatchNorm buffers are broadcast from rank 0 before every forward (= DataParallel's chunk 0)
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
            kw["forward_sync_buffers"] = True
        else:
            kw["broadcast_buffers"] = True
        # ablations leave whole heads unused (e.g. train.fusion_loss false); their grads stay None,
        # as in one process, so Adam skips them there and here alike
        return DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       find_unused_parameters=True, **kw)

    # -- collectives ------------------------------------------------------------------------------
    def _on_dev(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(self.device).contiguous()

    def gather(self, *tensors: torch.Tensor) -> List[torch.Tensor]:
        out = []
        for t in tensors:
            x = self._on_dev(t)
            parts = [torch.empty_like(x) for _ in range(self.world_size)]
            self.dist.all_gather(parts, x)
            out.append(torch.cat(parts, dim=0).to(t.device))
        return out

    def mean(self, values: Dict[str, float]) -> Dict[str, float]:
        keys = list(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def barrier(self) -> None:
        self.dist.barrier()

    def on_main(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        box: List[Any] = [None]
        if self.is_main:
            try:
                box = [("ok", fn(*args, **kw))]
            except Exception as e:  # every rank must leave the broadcast, then rank 0 re-raises
                box = [("error", f"{type(e).__name__}: {e}")]
                self.dist.broadcast_object_list(box, src=0)
                raise
        self.dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status != "ok":
            raise RuntimeError(f"rank 0 failed in {getattr(fn, '__name__', fn)}: {value}")
        return value

    def extract(self, model: nn.Module, dataset: Dataset, **kw: Any) -> torch.Tensor:
        """Each rank extracts a contiguous shard; the shards are all-gathered in order."""
        dist = self.dist
        for b in model.buffers():  # running statistics of rank 0 (others drift after their last step)
            dist.broadcast(b.data, src=0)
        n = len(dataset)
        per = math.ceil(n / self.world_size)
        lo, hi = min(n, self.rank * per), min(n, (self.rank + 1) * per)
        local = extract_features(model, Subset(dataset, range(lo, hi)), **kw) if hi > lo else None
        dim = torch.tensor([0 if local is None else local.shape[1]], device=self.device)
        dist.all_reduce(dim, op=dist.ReduceOp.MAX)
        buf = torch.zeros(per, int(dim.item()), device=self.device)
        if local is not None:
            buf[:hi - lo] = local.to(self.device)
        parts = [torch.empty_like(buf) for _ in range(self.world_size)]
        dist.all_gather(parts, buf)
        counts = [max(0, min(n, (r + 1) * per) - min(n, r * per)) for r in range(self.world_size)]
        return torch.cat([p[:c] for p, c in zip(parts, counts)], dim=0).cpu()


# ------------------------------------------------------------------------------------------------
def check_settings(s: TrainSettings) -> None:
    """One-line errors for a ``world_size`` the batch, BatchNorm groups or device cannot honour.

    Raises
    ------
    ConfigError
        ``batch_size`` not divisible into W equal slices (or into the BN groups), ``bn_groups`` not a
        multiple of W, a single ``cuda:N`` device, or ``nccl`` on the CPU.
    """
    w = s.world_size
    if w < 1:
        raise ConfigError(f"config train.world_size is {w}; use 1 (one process) or the number of GPUs")
    if w == 1:
        return
    if s.batch_size % w:
        raise ConfigError(f"config train.batch_size ({s.batch_size}) must be divisible by train.world_size ({w}): "
                          f"every GPU gets an equal contiguous slice of the batch")
    if s.bn_groups > 1 and s.bn_groups % w:
        raise ConfigError(f"config train.bn_groups ({s.bn_groups}) must be 1 or a multiple of train.world_size "
                          f"({w}): each GPU normalises its slice in bn_groups/world_size groups")
    groups = max(s.bn_groups, w)
    if s.batch_size % groups:
        raise ConfigError(f"config train.batch_size ({s.batch_size}) must be divisible by the {groups} BatchNorm "
                          f"groups of train.bn_groups/train.world_size")
    if s.device.startswith("cuda:"):
        raise ConfigError(f"config train.device is {s.device} (one GPU) but train.world_size is {w}; use auto or "
                          f"cuda, and restrict GPUs with CUDA_VISIBLE_DEVICES")
    if s.device == "cpu" and s.dist_backend == "nccl":
        raise ConfigError("config train.dist_backend is nccl but train.device is cpu; use auto or gloo")


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


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child before exec
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
    if line.startswith(_RECORD):
        try:
            rec = json.loads(line[len(_RECORD):])
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


def launch(job: Mapping[str, Any], settings: TrainSettings, *, threads: Optional[int] = None,
           progress: bool = True) -> None:
    """Run ``train_stage(**job)`` as ``settings.world_size`` torchrun ranks and wait for them.

    Parameters
    ----------
    job : mapping
        JSON-serialisable keyword arguments of :func:`maskcl.training.stage.train_stage` (paths,
        settings mapping, seed, outputs, state folder), without ``threads``/``progress``.
    settings : TrainSettings
        The parsed settings (world size, device, backend).
    threads : int, optional
        CPU threads of the whole job; each rank gets ``threads // world_size`` (at least 1).
    progress : bool
        Show rank 0's progress bars (on this process's stderr).

    Raises
    ------
    ConfigError
        Settings or visible GPUs that cannot host ``world_size`` ranks.
    MaskCLError
        A rank stopped on bad input: that rank's one-line message.
    RuntimeError
        A rank crashed otherwise (its traceback is relayed into this job's log) or was killed.
    """
    check_settings(settings)
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
               "--max-restarts=0", "-m", "maskcl.training.ddp", str(tmp / "job.json")]
        log.info("DDP: %s, backend %s, %d thread(s) per rank; global batch %d = %d per rank", where, backend,
                 per_rank, settings.batch_size, settings.batch_size // w)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                preexec_fn=_set_parent_death_signal)
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
            errors = sorted(tmp.glob("rank*.json"), key=lambda p: int(p.stem[4:]))
            reports = [json.loads(p.read_text(encoding="utf-8")) for p in errors]
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


# ------------------------------------------------------------------------------------------------
class _JsonLines(logging.Handler):
    """A rank's log records as single JSON lines on stdout, re-emitted by :func:`launch`."""

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
            sys.stdout.write(_RECORD + json.dumps({"name": record.name, "level": record.levelno, "msg": msg})
                             + "\n")
            sys.stdout.flush()
        except Exception:  # pragma: no cover - logging must never kill a rank
            self.handleError(record)


def _setup_rank_logging(rank: int) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(_JsonLines(rank))
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _report(folder: str, rank: int, user_error: bool, message: str) -> None:
    path = Path(folder) / f"rank{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, "user_error": user_error, "message": message}), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of one rank (``python -m maskcl.training.ddp JOB.json`` under torchrun)."""
    from .stage import train_stage

    parent = os.getppid()
    _set_parent_death_signal()  # die with torchrun
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
        train_stage(**args["job"], threads=args["threads"], progress=bool(args["progress"]) and rank == 0,
                    comm=comm)
    except MaskCLError as e:
        _report(args["errors"], rank, True, str(e))
        log.error("%s", e)
        return 1
    except Exception as e:
        _report(args["errors"], rank, False, f"{type(e).__name__}: {e}")
        log.error("unexpected failure on rank %d (a bug, please report it)", rank, exc_info=True)
        return 1
    finally:
        if comm is not None:
            comm.close()
    return 0


if __name__ == "__main__":
    from maskcl.training.ddp import main as _main  # the package's module, not a second __main__ copy

    sys.exit(_main())
