"""The record every method declares: its facts, pure data (no torch, no pandas).

A method's facts are what the rest of the pipeline needs to know about it without training it: the
workflow's plan (does it consume masks?), the config checks (which component switches does it have?)
and the reports (its row label, its group, its official switch values, its place in the tables).
Its torch code, in ``maskcl/training/methods/<name>.py``, is registered against the same record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, Mapping, Tuple, Union

__all__ = ["METHOD_GROUPS", "Switch", "MethodFacts"]

#: The row groups of a method's runs, in table order: an unsupervised method, a supervised upper
#: bound, or an untrained reference (``maskcl.reporting.labels.GROUPS`` adds the published groups).
METHOD_GROUPS: Tuple[str, ...] = ("unsupervised", "supervised", "reference")

#: A method's name is an ``experiments.<name>.method`` value and a Python module name.
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Switch:
    """One component switch: a ``train`` key that turns a part of the method on or off, or picks its form.

    Attributes
    ----------
    key : str
        The ``train`` key (a ``TrainSettings`` field and a key of the schema's ``train`` section).
    label : str
        Its column header in the component ablation table.
    official : bool or str
        Its value in the method's official code; a run with another value is labelled a variant,
        never the method.
    """

    key: str
    label: str
    official: Union[bool, str]


@dataclass(frozen=True)
class MethodFacts:
    """What a method is, for the plan, the config checks and the reports.

    Attributes
    ----------
    name : str
        The registry name: the value of ``experiments.<name>.method`` and the name of the method's
        modules (``maskcl/methods/<name>.py``, ``maskcl/training/methods/<name>.py``).
    display_name : str
        The row label of its runs in every table (``MaskCL (re-impl.)``).
    short_name : str
        The method's name in prose and table titles (``MaskCL``).
    citation : str
        Where the method comes from: the paper and the official code it is re-implemented from.
    group : str
        One of :data:`METHOD_GROUPS`: ``unsupervised``, ``supervised`` (an upper bound trained with
        identity labels, never a competitor) or ``reference`` (the untrained network).
    uses_masks : bool
        It trains on the masks of ``masks.train_source`` (its run folders name the mask source and
        mode; the other methods' name ``none``).
    trains : bool
        False for a reference whose initial weights are exported without a training step.
    switches : tuple of Switch
        Its component switches with their official values, in table-column order.
    recipe : mapping
        The ``train`` values of its repository's recipe where they differ from the schema's
        defaults (which are the official MaskCL code's): what an experiment of this method sets
        to train as its authors did.
    own_keys : tuple of str
        The ``train`` keys besides its switches that this method reads and not every method does
        (its loss weights, its curriculum). Set on an experiment of a method that neither lists
        nor switches them they would change nothing, so start-up refuses them; a key no method
        lists is read by every method.
    """

    name: str
    display_name: str
    short_name: str
    citation: str
    group: str
    uses_masks: bool
    trains: bool
    switches: Tuple[Switch, ...] = ()
    recipe: Mapping[str, Any] = field(default_factory=dict)
    own_keys: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"method name {self.name!r} must be lower-case letters, digits and _, a letter first")
        if self.group not in METHOD_GROUPS:
            raise ValueError(f"method {self.name}: group {self.group!r} is not one of {', '.join(METHOD_GROUPS)}")
        keys = [s.key for s in self.switches]
        if len(keys) != len(set(keys)):
            raise ValueError(f"method {self.name}: a component switch is declared twice ({', '.join(keys)})")
        both = sorted(set(keys) & set(self.own_keys))
        if both or len(set(self.own_keys)) != len(self.own_keys):
            raise ValueError(f"method {self.name}: an own key is declared twice or is also a switch "
                             f"({', '.join(both or self.own_keys)})")
        object.__setattr__(self, "switches", tuple(self.switches))
        object.__setattr__(self, "own_keys", tuple(self.own_keys))
        object.__setattr__(self, "recipe", MappingProxyType(dict(self.recipe)))

    @property
    def switch_keys(self) -> Tuple[str, ...]:
        """The ``train`` keys of its component switches, in column order."""
        return tuple(s.key for s in self.switches)

    @property
    def read_keys(self) -> Tuple[str, ...]:
        """The method-specific ``train`` keys it reads: its switches, then its own keys."""
        return self.switch_keys + self.own_keys

    @property
    def official_switches(self) -> Dict[str, Union[bool, str]]:
        """Each component switch's official value (a fresh dict)."""
        return {s.key: s.official for s in self.switches}
