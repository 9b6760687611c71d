"""The OpenAI-compatible HTTP server of the suite's model: FastAPI routes, schemas, metrics, auth.

    from core_model.serve import ServeSettings, create_app
    app = create_app(engine, tokenizer, ServeSettings(api_key="..."))   # then uvicorn.run(app)

It needs the `serve` extra (fastapi, uvicorn, prometheus-client). It does not load models or start
servers: the composition root (`apps/suite.py`, `verticals serve`) does.
"""

from .adapters import register_adapter
from .api import create_app, mount
from .service import ServeContext, build_context
from .settings import ServeSettings, SettingsError, is_loopback

__all__ = [
    "ServeContext",
    "ServeSettings",
    "SettingsError",
    "build_context",
    "create_app",
    "is_loopback",
    "mount",
    "register_adapter",
]
