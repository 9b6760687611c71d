"""`ServeSettings`: what the OpenAI-compatible server needs to know, parsed once at the edge.

The `verticals serve` command (or a test) builds one and passes it down; nothing below reads the
environment. Construction refuses an unsafe combination: listening beyond loopback with no API key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class SettingsError(ValueError):
    """Settings that must not start a server."""


@dataclass(frozen=True)
class ServeSettings:
    model: str = "embedded"  # preset name or checkpoint directory
    served_model_name: str | None = None  # the id clients send as `model`; default: `model`
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # when set, every /v1 and /metrics request needs `Bearer <api_key>`
    max_queue: int = 256  # requests waiting for a batch slot before new ones get 429
    max_cache_tokens: int | None = None  # latent KV cache capacity; None: the engine's default
    device: str | None = None  # None: cuda when available, else cpu
    adapters: tuple[tuple[str, str], ...] = ()  # (name, PEFT LoRA directory), loaded at start
    quantize: str | None = None  # "int8": weight-only int8 for linears and experts
    # Engines serving streamed requests, one process each (core_model.engine.replicas); "auto":
    # one per CPU core while their weights fit (replicas_for), one on CUDA.
    engine_replicas: int | str = 1

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be in [0, 65535], got {self.port}")
        if self.quantize not in (None, "int8"):
            raise SettingsError(f"quantize must be 'int8' or unset, got {self.quantize!r}")
        if self.engine_replicas != "auto" and not (
            isinstance(self.engine_replicas, int) and self.engine_replicas >= 1
        ):
            raise SettingsError(f"engine_replicas must be 'auto' or >= 1, got {self.engine_replicas!r}")
        if self.max_queue < 0:
            raise SettingsError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.max_cache_tokens is not None and self.max_cache_tokens < 1:
            raise SettingsError(f"max_cache_tokens must be >= 1, got {self.max_cache_tokens}")
        names = [name for name, _ in self.adapters]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise SettingsError(f"adapter names must differ; given more than once: {', '.join(repeated)}")
        if self.api_key == "":
            raise SettingsError("api_key is empty; leave it unset to serve without a key")
        if not is_loopback(self.host) and self.api_key is None:
            raise SettingsError(
                f"refusing to listen on {self.host} without an API key: anyone who can reach it could "
                "use the model. Pass --api-key KEY (or set VERTICALS_API_KEY), or bind 127.0.0.1."
            )

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual names of localhost; any other name counts as remote."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
