"""The training engine shared by every method: loop, schedule, logs, checkpoints and resume.

Resumable state lives in ``state_dir`` (never a Snakemake-declared output, which Snakemake deletes
when a job fails): after every epoch the model, optimiser, scheduler, memories, pseudo-labels and
the log rows are written atomically to ``state_dir/checkpoint.pt``. A rerun with the same settings,
seed and data continues after the last finished epoch; once ``model.pt`` and the log are written the
state is deleted. Every random source is re-seeded from
(seed, epoch) at the start of an epoch, so a resumed run produces exactly the metrics of an
uninterrupted one. Seeding and the device choice are ``maskcl.training.runtime``; ``model.pt`` is
written by ``maskcl.models.export``, the module that also reads it.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..hardware import training_hardware
from ..io import atomic_path, write_text_atomic
from ..models.export import save_model
from .batches import BatchMaker, DecodedImages, cache_rule
from .comm import LocalComm
from .data import TrainData
from .methods import METHODS
from .runtime import resolve_device, seed_everything, worker_init
from .sampler import CameraAwarePKSampler
from .settings import TrainSettings

__all__ = ["train", "TrainResult"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "maskcl-train-state/1"


@dataclass
class TrainResult:
    epochs_run: int
    resumed_from: Optional[int]
    log_rows: List[Dict[str, Any]]
    seconds: float


def _autocast(device: torch.device, amp: str):
    """``train.amp``: ``off`` (default) is float32 throughout, as the official code; autocast on a GPU only."""
    if device.type == "cuda" and amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda" and amp == "fp16":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def _rows_to_csv(rows: List[Dict[str, Any]]) -> str:
    keys: List[str] = ["epoch"]  # a log without epochs (the untrained reference) still has its header
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _save_state(path: Path, payload: Dict[str, Any]) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def _read_state(path: Path) -> Optional[Dict[str, Any]]:
    """The resume state at ``path``, or None; an unreadable one (damaged) is ignored, not fatal.

    The state is a cache of progress: training from the start rebuilds it, so a damaged file costs
    time, never a wrong result (it is overwritten at the end of the first epoch).
    """
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        log.warning("cannot read the training state %s (%s: %s): it is damaged; training from the first epoch "
                    "and overwriting it", path, type(e).__name__, reason)
        return None


def train(settings: TrainSettings, data: TrainData, *, seed: int, out_model: str, out_log: str,
          state_dir: str, threads: Optional[int] = None, progress: bool = True,
          stop_after_epoch: Optional[int] = None, comm: Optional[LocalComm] = None) -> TrainResult:
    """Train ``settings.method`` on ``data``; write ``out_model`` (model.pt) and ``out_log`` (CSV).

    ``stop_after_epoch`` ends the process-level run early after that epoch has been checkpointed (used
    to test resume); the outputs are then not written. ``comm`` is this process's place in a DDP job
    (``maskcl.training.comm.DistComm``: its device, its slice of every batch, rank 0 writes); default
    one process.
    """
    t0 = time.time()
    comm = comm if comm is not None else LocalComm()
    if threads:
        torch.set_num_threads(int(threads))
    device = comm.device or resolve_device(settings.device)
    seed_everything(seed)
    method = METHODS.build(settings.method, comm.method_settings(settings), data, device)
    method.comm = comm
    if not method.facts.trains:  # the untrained reference: its initial weights are the model, its log has no epoch
        log.info("exporting the untrained %s network (pretrained %s) without training", settings.arch,
                 settings.pretrained)
        if comm.is_main:
            _export(method, settings, data, seed, out_model, epochs=0)
            write_text_atomic(out_log, _rows_to_csv([]))
        return TrainResult(0, None, [], time.time() - t0)
    params = [p for p in method.module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.step_size, gamma=settings.gamma)
    digest = settings.digest(seed=seed, data=data.digest())
    state_path = Path(state_dir) / "checkpoint.pt"
    rows: List[Dict[str, Any]] = []
    start_epoch, resumed_from = 0, None
    state = _read_state(state_path)
    comm.barrier()  # every rank has read the state before rank 0 may discard it
    if state is not None:
        if state.get("format") == CHECKPOINT_FORMAT and state.get("digest") == digest:
            method.load_module_state(state["module"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            method.load_extra_state(state["extra"])
            rows = list(state["rows"])
            start_epoch = resumed_from = int(state["epoch"]) + 1
            log.info("resuming from epoch %d of %d (state %s)", start_epoch + 1, settings.epochs, state_path)
        else:
            log.info("discarding stale training state %s (settings, seed or data changed)", state_path)
            if comm.is_main:
                shutil.rmtree(state_dir, ignore_errors=True)
    batches = batch_maker(method, settings, data, device) if start_epoch < settings.epochs else None
    method.cache = batches.cache if batches is not None else None  # the memory and per-epoch extractions read it
    if resumed_from is None:
        log.info("starting %s from scratch on %d images (%s, device %s)", settings.method, len(data),
                 settings.arch, device)
        method.start()
    for epoch in range(start_epoch, settings.epochs):
        rows.append(_run_epoch(method, settings, data, epoch, seed, optimizer, scheduler, device, progress,
                               batches))
        if comm.is_main:  # every rank holds the same state; one writes it
            _save_state(state_path, {
                "format": CHECKPOINT_FORMAT, "digest": digest, "epoch": epoch,
                "module": method.module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "extra": method.extra_state(), "rows": rows})
            write_text_atomic(Path(state_dir) / "train_log.csv", _rows_to_csv(rows))
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return TrainResult(epoch + 1 - start_epoch, resumed_from, rows, time.time() - t0)
    if comm.is_main:
        _export(method, settings, data, seed, out_model, rows=rows)
        write_text_atomic(out_log, _rows_to_csv(rows))
        # the outputs are whole: the resume state (weights + Adam moments, ~290 MB for two ResNet-18
        # branches) is spent, and a --forcerun should train again rather than re-export the last epoch
        shutil.rmtree(state_dir, ignore_errors=True)
    return TrainResult(settings.epochs - start_epoch, resumed_from, rows, time.time() - t0)


def batch_maker(method: Any, s: TrainSettings, data: TrainData, device: torch.device) -> Optional[BatchMaker]:
    """The decoded cache and batch maker of a method that declares its views, or None (the per-sample path).

    The cache lives where ``maskcl.training.batches.cache_rule`` says; when it fits nowhere, the log
    says so with the numbers and the run reads from disk per sample (the same batches, slower).
    """
    views = method.views()
    if views is None:
        log.info("data: per-sample path (%s declares no batch views)", s.method)
        return None
    sources = {v.source for v in views}
    nbytes = len(data) * s.height * s.width * 3 * len(sources)
    where, why = cache_rule(nbytes, device)
    if where is None:
        log.warning("data: no decoded cache (%s)", why)
        return None
    t0 = time.perf_counter()
    masks = "mask" in sources
    cache = DecodedImages.build(data.paths, (s.height, s.width), mask_paths=data.mask_paths if masks else None,
                                mask_reader=data.mask_reader() if masks else None, where=where, device=device,
                                workers=s.workers)
    log.info("data: %d training images%s decoded and resized once into %s memory in %.1f s (%s); batches "
             "augmented whole", len(data), " and masks" if masks else "", "device" if where == "device" else "host",
             time.perf_counter() - t0, why)
    return BatchMaker(cache, views, (s.height, s.width), device)


class _Waited:
    """An iterator over ``items`` that sums, in ``waited``, the seconds spent waiting for each item: the
    data-path share of an epoch (the batches are produced lazily, so the wait is the producing)."""

    def __init__(self, items: Any) -> None:
        self._items = iter(items)
        self.waited = 0.0

    def __iter__(self) -> "_Waited":
        return self

    def __next__(self) -> Any:
        t = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.waited += time.perf_counter() - t


def _run_epoch(method: Any, s: TrainSettings, data: TrainData, epoch: int, seed: int, optimizer: Any,
               scheduler: Any, device: torch.device, progress: bool,
               batches: Optional[BatchMaker] = None) -> Dict[str, Any]:
    """Pseudo-labels, then ``s.iters`` optimisation steps; returns the epoch's log row.

    The row's ``data_s`` is the time spent waiting for batches, ``step_s`` the time in the optimisation
    steps and ``cluster_s`` the pseudo-labelling before them: where an epoch's ``epoch_s`` goes.
    """
    t0 = time.time()
    seed_everything(seed, epoch)
    stats = method.prepare_epoch(epoch)
    t_cluster = time.time() - t0
    sampler = CameraAwarePKSampler(method.labels, data.camids, s.batch_size, s.num_instances, s.iters, seed,
                                   replacement=s.sampler_replacement)
    # the global batches; under DDP each rank keeps its contiguous slice of every one
    keys = [method.comm.local_batch(b) for b in sampler.seeded_batches(epoch)]
    if batches is not None:
        loader: Any = (batches(k) for k in keys)
    else:
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, 7]).generate_state(1)[0]))
        loader = DataLoader(method.dataset(), batch_sampler=keys, num_workers=s.workers, worker_init_fn=worker_init,
                            generator=gen, pin_memory=device.type == "cuda", persistent_workers=False)
    method.module.train()
    sums: Dict[str, float] = {}
    n = 0
    bar = tqdm(loader, total=s.iters, desc=f"{s.method} epoch {epoch + 1}/{s.epochs}", disable=not progress,
               leave=False, mininterval=2.0)
    timed = _Waited(bar)
    step_s = 0.0
    for it, batch in enumerate(timed):
        t_step = time.perf_counter()
        method.step_seed = int(np.random.SeedSequence([seed, epoch, it, 0x6A7E]).generate_state(1)[0])
        with _autocast(device, s.amp):
            loss, terms = method.step(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step()
        n += 1
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        step_s += time.perf_counter() - t_step
    sums = method.comm.mean(sums)  # under DDP: the mean over ranks = the global-batch mean
    lr = optimizer.param_groups[0]["lr"]
    scheduler.step()
    row: Dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
    row.update({k: v / max(n, 1) for k, v in sums.items()})
    row.update(stats)
    row["cluster_s"] = round(t_cluster, 3)
    row["data_s"] = round(timed.waited, 3)
    row["step_s"] = round(step_s, 3)
    row["epoch_s"] = round(time.time() - t0, 3)
    log.info("epoch %d/%d: %s", epoch + 1, s.epochs,
             ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return row


def _export(method: Any, s: TrainSettings, data: TrainData, seed: int, out_model: str,
            epochs: Optional[int] = None, rows: Sequence[Mapping[str, Any]] = ()) -> None:
    """``model.pt`` of the trained method (format: ``maskcl.models.export``); ``epochs`` run, default all.

    ``rows`` are the log rows of every epoch (a resumed run's included), whose ``epoch_s`` sum is the
    training time the model card reports: compute time, not the wall time of interrupted sessions.
    """
    hardware = training_hardware(method.device, world_size=s.world_size, bn_groups=s.bn_groups,
                                 batch_size=s.batch_size, amp=s.amp)
    hardware["train_time_s"] = round(sum(float(r.get("epoch_s", 0.0)) for r in rows), 1)
    save_model(out_model, method=s.method, arch=s.arch, dim=method.rgb_backbone().dim, pooling=s.pooling,
               last_stride=s.last_stride, input_size=[s.height, s.width], settings=s.to_dict(), seed=seed,
               epochs=s.epochs if epochs is None else epochs, train_images=len(data), weights=method.export(),
               training=hardware)
