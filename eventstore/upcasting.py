"""Upcasters: turn event bodies written at an older schema version into the current one.

The log is immutable (DESIGN §3), so a payload change never rewrites stored events.
Instead each change that is not backwards compatible bumps the type's ``SCHEMA`` and
registers one upcaster per step. Reading applies the chain ``n -> n+1 -> ... -> current``
to the raw JSON body before pydantic validation.

>>> registry = UpcasterRegistry()
>>> @registry.register("demo.happened", from_version=1)
... def _rename(body: dict[str, Any]) -> dict[str, Any]:
...     data = dict(body["data"])
...     data["text"] = data.pop("msg")
...     return {**body, "data": data}
>>> registry.upcast({"type": "demo.happened", "schema": 1, "data": {"msg": "hi"}}, 2)
{'type': 'demo.happened', 'schema': 2, 'data': {'text': 'hi'}}
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from eventstore.errors import EventStoreError

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Takes a whole JSON body at version ``n`` and returns the body at version ``n + 1``.

The registry sets ``"schema"`` on the result, so an upcaster only reshapes fields. It
receives a private copy of the body and may modify it in place or build a new dict.
"""


class UpcastError(EventStoreError, ValueError):
    """A body cannot be brought to the current schema version of its type."""

    def __init__(self, event_type: str, reason: str) -> None:
        super().__init__(f"{event_type}: {reason}")
        self.event_type = event_type
        self.reason = reason


class UpcasterRegistry:
    """Upcasters keyed by ``(event_type, from_version)``."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register ``func`` as the step ``from_version -> from_version + 1``.

        Raises :class:`ValueError` when that step is already registered: two upcasters for
        one step would make the result depend on import order.
        """
        if not event_type:
            raise ValueError("event_type must not be empty")
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
            raise ValueError(f"from_version must be an int >= 1, got {from_version!r}")

        def decorator(func: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            existing = self._steps.get(key)
            if existing is not None:
                raise ValueError(
                    f"an upcaster for {event_type} {from_version} -> {from_version + 1} is "
                    f"already registered ({existing.__qualname__}); a step has exactly one"
                )
            self._steps[key] = func
            return func

        return decorator

    def has_step(self, event_type: str, from_version: int) -> bool:
        return (event_type, from_version) in self._steps

    def missing_steps(self, event_type: str, current_version: int) -> list[int]:
        """The ``from_version``s without an upcaster on the way from 1 to ``current_version``.

        An empty list means any body of this type written since version 1 can be read.
        """
        return [v for v in range(1, current_version) if (event_type, v) not in self._steps]

    def upcast(self, body: dict[str, Any], current_version: int) -> dict[str, Any]:
        """``body`` brought to ``current_version``; the input is never modified.

        A body already at ``current_version`` (or without ``"schema"``, which means
        "current") is returned as is, without a copy. Otherwise the result is a new dict.

        Raises :class:`UpcastError` when the version is not an integer, when it is newer
        than ``current_version`` (the body was written by a newer jetledger), when a step
        of the chain is missing, or when an upcaster fails.
        """
        event_type = body.get("type")
        if not isinstance(event_type, str):
            raise UpcastError("<unknown>", "the body has no string 'type', so it cannot be upcast")
        if "schema" not in body:
            return body
        version = body["schema"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise UpcastError(event_type, f"'schema' must be an integer, got {version!r}")
        if version == current_version:
            return body
        if version > current_version:
            raise UpcastError(
                event_type,
                f"the body has schema {version} but this jetledger reads at most schema "
                f"{current_version}: it was written by a newer jetledger; upgrade to read it",
            )
        missing = [v for v in range(version, current_version) if not self.has_step(event_type, v)]
        if missing:
            steps = ", ".join(f"{v} -> {v + 1}" for v in missing)
            raise UpcastError(
                event_type,
                f"cannot upcast schema {version} to {current_version}: no upcaster "
                f"registered for step {steps}",
            )
        upcasted = copy.deepcopy(body)
        for step_from in range(version, current_version):
            upcasted = self._apply(event_type, step_from, upcasted)
        return upcasted

    def _apply(self, event_type: str, from_version: int, body: dict[str, Any]) -> dict[str, Any]:
        func = self._steps[(event_type, from_version)]
        step = f"{from_version} -> {from_version + 1}"
        try:
            result = func(body)
        except Exception as exc:
            # Bad stored data must surface as a readable decode failure (G6), not as a
            # KeyError that ends the read loop.
            raise UpcastError(
                event_type, f"upcaster {step} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(result, dict):
            raise UpcastError(
                event_type, f"upcaster {step} returned {type(result).__name__}, not a dict"
            )
        if result.get("type") != event_type:
            raise UpcastError(
                event_type, f"upcaster {step} changed 'type' to {result.get('type')!r}"
            )
        result["schema"] = from_version + 1
        return result


UPCASTERS = UpcasterRegistry()
"""The registry the catalog registers into and the codec reads with."""


__all__ = ["UPCASTERS", "UpcastError", "Upcaster", "UpcasterRegistry"]
