"""A small name → object registry shared by every pluggable concept.

Datasets, mask sources, backbones and methods each own one ``Registry``. Registration sits next to
the class (decorator form), duplicates are refused, and a miss lists the known names so that a typo
in ``config.yaml`` is fixed from the error message alone.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

from .errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry:
    """Maps names to objects; ``register`` works as a decorator or a plain call."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, Any] = {}

    def register(self, name: str, obj: Optional[T] = None) -> Any:
        def _add(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        if obj is not None:
            return _add(obj)
        return _add

    def get(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory: Callable[..., Any] = self.get(name)
        return factory(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
