"""The training methods' facts, behind one registry: what the workflow knows about a method without torch.

Each method declares its facts in its own module here (a :class:`MethodFacts`: display name,
citation, group, whether it consumes masks and whether it trains, its component switches with their
official values, its repository recipe). ``rules/common.smk`` builds the plan from them
(``maskcl.plan``), the config checks read them (``maskcl.config``) and so do the reports
(``maskcl.reporting``); none of these imports torch or names a method. The method's torch code lives
in ``maskcl/training/methods/<name>.py`` and is registered against these facts
(``maskcl.training.methods.register_method``).

Adding a method: docs/architecture.md, "Where to add things: a method".
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from ..registry import Registry
from .cacl import CACL
from .clustercontrast import CLUSTERCONTRAST
from .facts import METHOD_GROUPS, MethodFacts, Switch
from .ise import ISE
from .maskcl import MASKCL
from .spcl import SPCL
from .supervised import SUPERVISED
from .untrained import UNTRAINED

__all__ = ["METHOD_FACTS", "METHOD_GROUPS", "MethodFacts", "Switch", "DEFAULT_METHOD", "register_method_facts",
           "get_method", "list_methods", "report_order", "switch_columns", "switch_owners", "key_owners",
           "switched_methods"]

#: Name → facts. Add a method by writing its facts module and registering its record here.
METHOD_FACTS = Registry("method")

#: Names in registration order, which is the order of methods in reports (``report_order``).
_ORDER: List[str] = []


def register_method_facts(facts: MethodFacts) -> MethodFacts:
    if not isinstance(facts, MethodFacts):
        raise TypeError(f"register_method_facts takes a MethodFacts record, not {type(facts).__name__}")
    METHOD_FACTS.register(facts.name, facts)
    _ORDER.append(facts.name)
    return facts


# Registration order is report order (rows of a group, the experiments named after a method first).
register_method_facts(MASKCL)
register_method_facts(CLUSTERCONTRAST)
register_method_facts(CACL)
register_method_facts(SPCL)
register_method_facts(ISE)
register_method_facts(SUPERVISED)
register_method_facts(UNTRAINED)

#: The method whose official code gives the schema's ``train`` defaults (``TrainSettings``' default method).
DEFAULT_METHOD: str = MASKCL.name


def get_method(name: str) -> MethodFacts:
    """The facts of method ``name`` (an unknown name is a ``ConfigError`` listing the known ones)."""
    return METHOD_FACTS.get(name)


def list_methods() -> List[str]:
    """Registered method names, sorted."""
    return METHOD_FACTS.names()


def report_order() -> Tuple[str, ...]:
    """Registered method names in the order reports list them (registration order, not sorted)."""
    return tuple(_ORDER)


def switch_columns() -> Dict[str, Switch]:
    """Every component switch of a registered method, keyed by ``train`` key, in report order.

    These are the component columns of the reports; a key two methods declare is one column (its
    first declaration gives the label and the value's type).
    """
    out: Dict[str, Switch] = {}
    for name in _ORDER:
        for switch in METHOD_FACTS.get(name).switches:
            out.setdefault(switch.key, switch)
    return out


def switch_owners(key: str) -> Tuple[str, ...]:
    """The methods that have the component switch ``key``, in report order (none: not a switch)."""
    return tuple(n for n in _ORDER if key in METHOD_FACTS.get(n).switch_keys)


def key_owners(key: str) -> Tuple[str, ...]:
    """The methods that read the method-specific ``train`` key ``key`` (a switch or an own key), in report order.

    Empty for a key every method reads (``lr``, ``epochs``): only a non-empty answer can refuse a key.
    """
    return tuple(n for n in _ORDER if key in METHOD_FACTS.get(n).read_keys)


def switched_methods() -> Tuple[str, ...]:
    """The methods with component switches, in report order (the component ablation's rows)."""
    return tuple(n for n in _ORDER if METHOD_FACTS.get(n).switches)

