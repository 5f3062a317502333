"""Training hyper-parameters as one typed record.

Defaults are the official MaskCL code's (``CMC.py`` argparse defaults, ``run_code.sh`` turning on
refinement), written once, in the JSON schema's ``train`` section; ``config.yaml`` overrides them for
the CPU SynthCC run. ``TrainSettings.from_dict`` refuses unknown keys with the list of known ones, and
:func:`check_settings` the process layouts ``world_size`` cannot honour; a job parses and checks its
settings once (``maskcl.training.stage``), its DDP ranks only rebuild the record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Mapping, Optional, Tuple

from ..config import check_train_rules, section_defaults, settings_from_dict
from ..errors import ConfigError
from ..methods import DEFAULT_METHOD, key_owners

__all__ = ["TrainSettings", "check_settings", "RUN_EXEMPT", "SettingsDifference", "settings_difference"]


@dataclass
class TrainSettings:
    """Training settings of one run. Every default is the schema's ``train`` section (the official MaskCL
    code's values), its one owner: build a record with :meth:`from_dict` or :meth:`defaults`."""

    method: str  # default DEFAULT_METHOD, the method whose official code gives the schema's defaults (MaskCL)
    # backbone and input
    arch: str
    pretrained: str
    pooling: str
    last_stride: int
    height: int
    width: int
    pad: int
    erasing: float
    # optimisation
    epochs: int
    iters: int
    batch_size: int
    num_instances: int
    sampler_replacement: str
    lr: float
    weight_decay: float
    step_size: int
    gamma: float
    # memories and losses
    temp: float
    momentum: float
    focal_gamma: float
    allknn: int
    neighbour_loss: bool
    neighbour_weights: str
    neighbour_reduction: str
    softmax_eps: float
    crossview_loss: bool
    mask_loss: bool
    fusion_loss: bool
    # ISE (its official Market-1501 values)
    ise_lambda_base: float
    ise_topk: int
    ise_use_support: bool
    ise_supports_update: bool
    ise_lp_weight: float
    ise_lp_temp: float
    ise_lp_negatives: str
    ise_memory_update: str
    # clustering
    cluster_on: str
    memory_refresh: bool
    memory_init: str
    eps: float
    eps_gap: float
    min_samples: int
    k1: int
    k2: int
    refine: bool
    ratio_cluster: float
    knn_backend: str
    # execution
    bn_groups: int
    amp: str
    channels_last: str
    workers: int
    device: str
    world_size: int  # torchrun DDP processes (GPUs) per job; maskcl.training.launch
    dist_backend: str
    extras: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainSettings":
        """The schema's ``train`` defaults (and the default method) overridden by ``values``."""
        merged: Dict[str, Any] = {"method": DEFAULT_METHOD, **section_defaults("train")}
        merged.update(values)
        return settings_from_dict(cls, merged, "train", hidden={"extras"})

    @classmethod
    def defaults(cls) -> "TrainSettings":
        """The schema's defaults: the official MaskCL recipe."""
        return cls.from_dict({})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, **context: Any) -> str:
        """A stable hash of the settings plus context (seed, data), naming resumable state."""
        blob = json.dumps({"settings": self.to_dict(), **context}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_settings(s: TrainSettings) -> None:
    """The start-up rules between train keys (``maskcl.config.check_train_rules``, their one owner) for settings
    that reach a job without passing start-up (a library call, a benchmark): one-line errors for a
    ``world_size`` the batch, BatchNorm groups or device cannot honour, and the rest of those rules.

    Raises
    ------
    ConfigError
        The first broken rule, naming the ``train`` keys.
    """
    if s.world_size < 1:
        raise ConfigError(f"config train.world_size is {s.world_size}; use 1 (one process) or the number of GPUs")
    check_train_rules(s.to_dict(), {}, s.method)


#: Settings a trained model does not depend on, so a model recording another value is still the run's:
#: ``workers`` only (each sample's augmentation is drawn from its own seed, ``maskcl.models.images``,
#: so the weights do not depend on how many DataLoader processes decode the images). Every other
#: key can change the weights (``device``, ``world_size``, ``amp`` and ``channels_last`` change the
#: arithmetic), and Snakemake retrains a run when any of them changes, so none is exempt.
RUN_EXEMPT: Tuple[str, ...] = ("workers",)


@dataclass(frozen=True)
class SettingsDifference:
    """The first training setting a trained model records otherwise than its run expects.

    ``kind`` is ``value`` (both have it, with other values), ``missing`` (the file does not record
    it: a model of an older version, trained before the setting existed, whatever its default is
    now) or ``unknown`` (the file records a key that is no setting of this version).
    """

    key: str
    recorded: Any
    expected: Any
    kind: str = "value"

    def describe(self, recorded_in: str, expected_in: str) -> str:
        """``train.<key> is <recorded> in <recorded_in> but <expected> in <expected_in>``, or the like."""
        if self.kind == "unknown":
            return f"train.{self.key} = {self.recorded!r} in {recorded_in} is not a training setting of this version"
        if self.kind == "missing":
            return (f"train.{self.key} is not recorded in {recorded_in} (a model of an older version) but is "
                    f"{self.expected!r} in {expected_in}")
        return f"train.{self.key} is {self.recorded!r} in {recorded_in} but {self.expected!r} in {expected_in}"


def settings_difference(recorded: Mapping[str, Any], expected: Mapping[str, Any], *,
                        only: Optional[Collection[str]] = None) -> Optional[SettingsDifference]:
    """The first key, in ``TrainSettings`` order, whose value differs between two settings dicts, or None.

    ``expected`` (the plan's merged settings, valid) is normalised through ``TrainSettings`` (its
    defaults fill what the dict leaves out, e.g. ``extras``); ``recorded`` (``TrainSettings.to_dict()``
    of the model, which holds every key of the version that trained it) is taken as it is: a key it
    lacks is a difference, because a setting added later need not have had its current default's
    effect before it existed. Key order does not matter; :data:`RUN_EXEMPT` is skipped, and so is a
    key only other methods read (``maskcl.methods.key_owners``: it changes nothing this run computes,
    so adding a method does not make every other method's models foreign). ``only`` limits the
    comparison to those keys (an experiment's ``train`` overrides).
    """
    names = [f.name for f in dataclasses.fields(TrainSettings)]
    unknown = [k for k in recorded if k not in names]
    if unknown:
        return SettingsDifference(unknown[0], recorded[unknown[0]], None, kind="unknown")
    exp = TrainSettings.from_dict(expected).to_dict()
    for k in names:
        if k in RUN_EXEMPT or (only is not None and k not in only):
            continue
        owners = key_owners(k)
        if owners and exp["method"] not in owners:
            continue
        if k not in recorded:
            return SettingsDifference(k, None, exp[k], kind="missing")
        if recorded[k] != exp[k]:
            return SettingsDifference(k, recorded[k], exp[k])
    return None
