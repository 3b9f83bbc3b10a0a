"""One small registry mechanism, used for datasets, model families and distillation losses."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from kdnas.core._errors import KdnasError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table. Registration happens in one explicit place per registry."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KdnasError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
