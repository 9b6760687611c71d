"""What the server adds to the engine's LoRA adapters: who holds which adapter, and reading a
client's directory into the engine with one kind of error.

    outputs = holds.hold("sql", outputs)     # "sql" counts as in use until `outputs` end or close
    register_adapter(engine, "sql", "/adapters/sql")   # AdapterError (a ValueError) naming "sql"

The routes' logic (model names, 404/409s) is in `service.py`; the adapters themselves, their
files and their arithmetic in `core_model.engine.lora`.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError

from ..engine import Engine, RequestOutput
from ..engine.lora import AdapterError

Outputs = AsyncGenerator[RequestOutput, None]
# Whatever reading a client's adapter directory raises is a bad directory (a 400), not a server bug.
_UNREADABLE = (OSError, ValueError, KeyError, TypeError, ArithmeticError, SafetensorError)


@dataclass(eq=False)
class _Hold:
    adapter: str


class AdapterHolds:
    """Which adapters accepted requests use, from `start` until their outputs close.

    NOTE: a response cancelled before it began never runs its output generator, so no `finally`
    of it runs either; the set is weak, and the hold goes when the unstarted generator is dropped.
    """

    def __init__(self) -> None:
        self._holds: weakref.WeakSet[_Hold] = weakref.WeakSet()

    def hold(self, adapter: str, outputs: Outputs) -> Outputs:
        """`outputs`, holding `adapter` from now until they end or are closed or dropped."""
        hold = _Hold(adapter)
        self._holds.add(hold)
        return self._release_after(hold, outputs)

    async def _release_after(self, hold: _Hold, outputs: Outputs) -> Outputs:
        try:
            async with aclosing(outputs):
                async for output in outputs:
                    yield output
        finally:
            self._holds.discard(hold)

    def count(self, adapter: str) -> int:
        return sum(hold.adapter == adapter for hold in list(self._holds))

    def names(self) -> set[str]:
        return {hold.adapter for hold in list(self._holds)}


def register_adapter(engine: Engine, name: str, path: str | Path) -> None:
    """`engine.load_adapter`, with whatever a broken directory raises turned into an AdapterError
    (a ValueError) that names the adapter."""
    try:
        engine.load_adapter(name, path)
    except AdapterError:
        raise
    except _UNREADABLE as error:
        raise AdapterError(f"adapter {name!r}: cannot read {path}: {error}") from error
