"""Which device a job runs on: explicit GPU selection, because Snakemake never assigns GPUs.

Snakemake only *counts* the ``gpu`` resource; it never sets ``CUDA_VISIBLE_DEVICES`` (snakemake
issue #281). Two training jobs started together on a 4-GPU box would both take ``cuda:0``. So every
stage asks :func:`select_device` for its device:

- ``"cpu"`` and ``"cuda:N"`` are taken as given (``cuda:N`` must be visible).
- ``"auto"`` (and ``"cuda"``, which also insists on a GPU): with one visible GPU, that GPU. This is
  the SLURM case too: the scheduler grants GPUs by setting ``CUDA_VISIBLE_DEVICES``, and the job uses
  what it exposes. With several visible GPUs (a local multi-GPU box, or a whole-node allocation that
  runs Snakemake inside it) the job *claims* one: an exclusive ``fcntl.flock`` on one lock file per
  GPU, held until the process exits (the kernel drops it even on a crash, so no stale locks). The
  first free GPU is taken; concurrent jobs therefore get distinct GPUs, and a job finding all GPUs
  claimed waits for one (Snakemake's ``gpu`` resource normally prevents that).
- A GPU granted by the environment (``CUDA_VISIBLE_DEVICES`` set and not empty) that torch cannot
  see is an error, not a silent CPU run: it means a CPU-only torch build or a broken driver.

Lock files live in ``lock_dir`` (default: ``$MASKCL_GPU_LOCK_DIR``, else
``<tmp>/maskcl-gpu-locks-<uid>``), in a sub-folder per scheduler job (``slurm-<SLURM_JOB_ID>``) so
that two SLURM jobs sharing a node, whose cgroups both renumber their GPUs from 0, never contend.
Keep it on a local filesystem: flock over NFS is not reliable.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Union

from .errors import ConfigError, GpuBusyError

if TYPE_CHECKING:  # torch is imported only when a device is built (the lock logic needs none)
    import torch

__all__ = ["GpuClaim", "GpuBusyError", "claim_gpu", "default_lock_dir", "release_claims", "select_device",
           "visible_gpu_ids"]

log = logging.getLogger(__name__)

#: Environment variables that mark a process as a batch-scheduler job (SLURM, PBS/Torque, LSF).
SCHEDULER_JOB_VARS = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")
#: CUDA_VISIBLE_DEVICES values that hide every GPU on purpose.
_HIDDEN = {"", "-1", "nodevfiles", "none"}
_SPEC = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")

_claims: Dict[str, "GpuClaim"] = {}
_claims_lock = threading.Lock()


@dataclass(frozen=True)
class GpuClaim:
    """One GPU held by this process.

    ``index`` is the CUDA ordinal inside this process (``cuda:<index>``); ``physical_id`` is the
    entry of ``CUDA_VISIBLE_DEVICES`` it maps to (or the index when that is unset), which names the
    lock file so that processes with different visibility masks still agree.
    """

    index: int
    physical_id: str
    lock_path: Path
    fd: int


def visible_gpu_ids(count: int, environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Physical ids of the ``count`` GPUs this process sees, in CUDA ordinal order.

    Parameters
    ----------
    count : int
        Number of devices torch reports (``torch.cuda.device_count()``).
    environ : mapping, optional
        Environment to read ``CUDA_VISIBLE_DEVICES`` from (default ``os.environ``).

    Returns
    -------
    list of str, length ``count``
        The ``CUDA_VISIBLE_DEVICES`` entries (indices, ``GPU-<uuid>`` or ``MIG-<uuid>``) or, when it
        is unset, ``"0" .. str(count - 1)``.
    """
    env = os.environ if environ is None else environ
    mask = env.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return [str(i) for i in range(count)]
    ids = [part.strip() for part in mask.split(",") if part.strip()]
    if len(ids) < count:  # torch sees more than the mask lists: trust the mask for the first ones
        ids += [f"unlisted{i}" for i in range(len(ids), count)]
    return ids[:count]


def default_lock_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where GPU lock files go: ``$MASKCL_GPU_LOCK_DIR`` or a per-user folder in the temp dir,
    plus one sub-folder per scheduler job."""
    env = os.environ if environ is None else environ
    base = env.get("MASKCL_GPU_LOCK_DIR") or str(Path(tempfile.gettempdir()) / f"maskcl-gpu-locks-{os.getuid()}")
    for var in SCHEDULER_JOB_VARS:
        if env.get(var):
            return Path(base) / f"{var.split('_')[0].lower()}-{_safe(env[var])}"
    return Path(base)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown process"
    except OSError:
        return "unknown process"


def _try_lock(path: Path) -> Optional[int]:
    """An fd holding an exclusive flock on ``path``, or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        writable = True
    except PermissionError:  # another user's lock file in a shared MASKCL_GPU_LOCK_DIR: flock needs no write
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise ConfigError(f"cannot open the GPU lock file {path} ({e.strerror}); point MASKCL_GPU_LOCK_DIR "
                              f"at a folder every user of this machine can write") from e
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    if writable:  # who holds it, for the messages of processes that find it taken
        note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
    return fd


def _prepare_lock_dir(lock_dir: Path) -> None:
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the GPU lock folder {lock_dir} ({e.strerror}); point "
                          f"MASKCL_GPU_LOCK_DIR at a writable local folder") from e
    if not os.access(lock_dir, os.W_OK):
        raise ConfigError(f"the GPU lock folder {lock_dir} is not writable; point MASKCL_GPU_LOCK_DIR at "
                          f"a writable local folder")


def claim_gpu(physical_ids: Sequence[str], *, lock_dir: Union[str, os.PathLike],
              wait_timeout: Optional[float] = None, poll_interval: float = 1.0) -> GpuClaim:
    """Claim the first GPU no other process holds; wait while all are held.

    Parameters
    ----------
    physical_ids : sequence of str, length N >= 1
        Physical ids of the visible GPUs in ordinal order (:func:`visible_gpu_ids`).
    lock_dir : path
        Folder shared by every job on this machine (:func:`default_lock_dir`).
    wait_timeout : float, optional
        Seconds to wait for a free GPU; None waits as long as it takes.
    poll_interval : float
        Seconds between attempts while every GPU is held.

    Returns
    -------
    GpuClaim
        Held until :func:`release_claims` or the end of the process. A second call in the same
        process returns the same claim (flock would otherwise make a process contend with itself).

    Raises
    ------
    GpuBusyError
        Every GPU stayed held for ``wait_timeout`` seconds.
    ConfigError
        The lock folder cannot be created or written.
    """
    if not physical_ids:
        raise ValueError("claim_gpu needs at least one GPU id")
    lock_dir = Path(lock_dir)
    key = str(lock_dir.resolve()) + "|" + ",".join(physical_ids)
    with _claims_lock:
        held = _claims.get(key)
        if held is not None:
            return held
        _prepare_lock_dir(lock_dir)
        start = time.monotonic()
        warned = False
        while True:
            for index, pid in enumerate(physical_ids):
                path = lock_dir / f"gpu-{_safe(pid)}.lock"
                fd = _try_lock(path)
                if fd is not None:
                    claim = GpuClaim(index=index, physical_id=pid, lock_path=path, fd=fd)
                    _claims[key] = claim
                    return claim
            waited = time.monotonic() - start
            holders = "; ".join(f"GPU {pid}: {_holder(lock_dir / f'gpu-{_safe(pid)}.lock')}"
                                for pid in physical_ids)
            if wait_timeout is not None and waited >= wait_timeout:
                raise GpuBusyError(f"all {len(physical_ids)} visible GPUs stayed claimed by other jobs for "
                                   f"{waited:.0f} s ({holders}; locks in {lock_dir}); run at most that many "
                                   f"GPU jobs at once (snakemake --resources gpu={len(physical_ids)})")
            if not warned:
                log.warning("all %d visible GPUs are claimed by other jobs (%s); waiting for one to free up",
                            len(physical_ids), holders)
                warned = True
            time.sleep(poll_interval)


def _claim_explicit(lock_dir: Path, index: int, physical_id: str) -> str:
    """Lock a GPU named in the config without waiting; a GPU someone else holds is shared, with a
    warning (the config asked for exactly this one). Returns a note for the log line."""
    path = lock_dir / f"gpu-{_safe(physical_id)}.lock"
    key = f"{lock_dir.resolve()}|explicit|{physical_id}"
    with _claims_lock:
        if key in _claims:
            return f"; lock {path}"
        _prepare_lock_dir(lock_dir)
        fd = _try_lock(path)
        if fd is None:
            log.warning("GPU %s is also claimed by %s; sharing it because the config names it", physical_id,
                        _holder(path))
            return "; shared with another job"
        _claims[key] = GpuClaim(index=index, physical_id=physical_id, lock_path=path, fd=fd)
        return f"; lock {path}"


def release_claims() -> None:
    """Release every GPU this process claimed (normally the end of the process does it)."""
    with _claims_lock:
        for claim in _claims.values():
            try:
                os.close(claim.fd)
            except OSError:
                pass
        _claims.clear()


def select_device(spec: Union[str, "torch.device"] = "auto", *, key: str = "device",
                  lock_dir: Union[str, os.PathLike, None] = None, device_count: Optional[int] = None,
                  environ: Optional[Mapping[str, str]] = None, wait_timeout: Optional[float] = None,
                  poll_interval: float = 1.0) -> "torch.device":
    """The device one job should use, claiming a GPU of its own when several are visible.

    Parameters
    ----------
    spec : {"auto", "cpu", "cuda", "cuda:N"} or torch.device
        ``auto``: a GPU when one is visible, else the CPU. ``cuda``: a GPU, or an error.
    key : str
        Config key the spec came from (``train.device``); named in every error.
    lock_dir : path, optional
        Lock folder shared by the jobs of this machine (default :func:`default_lock_dir`).
    device_count : int, optional
        Number of visible CUDA devices; default ``torch.cuda.device_count()``. Injectable so the
        selection logic is testable without a GPU.
    environ : mapping, optional
        Environment (``CUDA_VISIBLE_DEVICES``, scheduler job ids); default ``os.environ``.
    wait_timeout, poll_interval : float
        See :func:`claim_gpu`.

    Returns
    -------
    torch.device
        ``cpu`` or ``cuda:<ordinal>``. When CUDA is really present the chosen GPU also becomes the
        current device (``torch.cuda.set_device``), so code that says just ``"cuda"`` lands on it.

    Raises
    ------
    ConfigError
        The spec is malformed, names a GPU that is not visible, asks for CUDA on a machine without
        it, or the environment grants a GPU that torch cannot see.
    GpuBusyError
        All GPUs stayed claimed for ``wait_timeout`` seconds.
    """
    import torch

    env = os.environ if environ is None else environ
    text = str(spec)
    if not _SPEC.match(text):
        raise ConfigError(f"{key} is {text!r}; use auto, cpu, cuda or cuda:N")
    if text == "cpu":
        log.info("%s: cpu (as configured)", key)
        return torch.device("cpu")
    n = torch.cuda.device_count() if device_count is None else int(device_count)
    mask = env.get("CUDA_VISIBLE_DEVICES")
    mask_note = f"CUDA_VISIBLE_DEVICES={mask!r}" if mask is not None else "CUDA_VISIBLE_DEVICES unset"
    granted = mask is not None and mask.strip().lower() not in _HIDDEN
    if n == 0:
        if granted or text != "auto":
            why = (f"the environment grants GPU(s) ({mask_note}) but torch "
                   f"{getattr(torch, '__version__', '?')} sees none (a CPU-only torch build, or no driver)"
                   if granted else f"no CUDA device is visible ({mask_note})")
            raise ConfigError(f"{key} is {text}: {why}; install a CUDA build of torch (conda: see envs/*.yaml, "
                              f"CONDA_OVERRIDE_CUDA) or set {key} to cpu")
        log.info("%s: cpu (auto; no CUDA device visible, %s)", key, mask_note)
        return torch.device("cpu")
    ids = visible_gpu_ids(n, env)
    scheduler = next((v for v in SCHEDULER_JOB_VARS if env.get(v)), None)
    if scheduler and mask is None:
        log.warning("%s: this %s job has no CUDA_VISIBLE_DEVICES but torch sees %d GPU(s); it may be "
                    "using GPUs it was not granted (request them with the gpu resource)", key, scheduler, n)
    if text.startswith("cuda:"):
        index = int(text.split(":", 1)[1])
        if index >= n:
            raise ConfigError(f"{key} is {text} but only {n} CUDA device(s) are visible ({mask_note}); "
                              f"use auto, or an index below {n}")
        dev = torch.device(text)
        note = ""
        if n > 1:  # hold its lock too, so that `auto` jobs steer clear of it
            where = Path(lock_dir) if lock_dir is not None else default_lock_dir(env)
            note = _claim_explicit(where, index, ids[index])
        log.info("%s: %s (as configured; physical GPU %s, %s%s)", key, dev, ids[index], mask_note, note)
    elif n == 1:
        dev = torch.device("cuda:0")
        log.info("%s: cuda:0 (%s; the only visible GPU, physical %s, %s)", key, text, ids[0], mask_note)
    else:
        where = Path(lock_dir) if lock_dir is not None else default_lock_dir(env)
        claim = claim_gpu(ids, lock_dir=where, wait_timeout=wait_timeout, poll_interval=poll_interval)
        dev = torch.device(f"cuda:{claim.index}")
        log.info("%s: %s (%s; claimed physical GPU %s of %d visible, lock %s held until exit, %s)",
                 key, dev, text, claim.physical_id, n, claim.lock_path, mask_note)
    if torch.cuda.is_available() and dev.index is not None and dev.index < torch.cuda.device_count():
        torch.cuda.set_device(dev)
    return dev
