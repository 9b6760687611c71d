"""The suite's one FastAPI app: the model loaded once, the OpenAI-compatible API, and every
vertical's router (customer service under /cs, code assist under /code, medical under /medical,
finance under /finance, industrial QC under /qc).

    verticals serve                                   # this app under uvicorn on 127.0.0.1:8000
    verticals serve --model CHECKPOINT --port 8001    # a Hugging Face directory with tokenizer files
    verticals serve --adapter sql=/adapters/sql       # LoRA adapters, served as `model="embedded:sql"`

It is part of the composition root (with `cli.py`): the only code that knows every app. It loads
and wires; the routes live in `core_model.serve` and in the apps.
"""

from __future__ import annotations

import logging
from typing import cast

import torch
from fastapi import FastAPI

from apps.code_assist.settings import CodeAssistSettings
from apps.customer_service.settings import CustomerServiceSettings
from apps.finance_risk.settings import FinanceSettings
from apps.industrial_qc.settings import QCSettings
from apps.medical.settings import MedicalSettings
from core_model.checkpoint import serving_dtype
from core_model.engine import Engine
from core_model.engine.replicas import EngineReplicas, EngineSpec, build_engine, replicas_for
from core_model.serve import ServeSettings, build_context, mount, register_adapter

log = logging.getLogger(__name__)


def create_app(
    settings: ServeSettings,
    *,
    customer_service: CustomerServiceSettings | None = None,
    code_assist: CodeAssistSettings | None = None,
    medical: MedicalSettings | None = None,
    finance: FinanceSettings | None = None,
    industrial_qc: QCSettings | None = None,
) -> FastAPI:
    """Loads the model, tokenizer, engine and adapters that `settings` name, and mounts every router:
    each vertical's when its settings are given (they share the engine: drafts, completions).

    A bad adapter raises an AdapterError (a ValueError) naming it: nothing is served half-loaded.
    With `settings.engine_replicas` above 1, streamed requests also run on helper processes that
    each build the same engine (core_model.engine.replicas).
    """
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    fields = {} if settings.max_cache_tokens is None else {"max_cache_tokens": settings.max_cache_tokens}
    spec = EngineSpec(
        model=settings.model,
        device=device,
        dtype=serving_dtype(settings.model, device),
        quantize=settings.quantize,
        config=fields,
    )
    local = build_engine(spec)
    replicas = replicas_for(spec) if settings.engine_replicas == "auto" else int(settings.engine_replicas)
    # An Engine to every app: only `stream` is spread over the helpers.
    engine = cast(Engine, EngineReplicas(local, spec, helpers=replicas - 1)) if replicas > 1 else local
    tokenizer = local.tokenizer
    assert tokenizer is not None
    log.info(
        "loaded %s on %s; cache %d tokens; bfloat16 experts from %s token-expert pairs; %d engine replica(s)",
        settings.model,
        device,
        local.config.max_cache_tokens,
        local.config.bfloat16_experts_from or "none (off)",
        replicas,
    )
    try:
        for name, path in settings.adapters:
            register_adapter(engine, name, path)
            log.info("loaded adapter %r from %s", name, path)
        app = FastAPI(title="verticals", summary="Vertical AI applications on one MoE model")
        mount(app, build_context(engine, tokenizer, settings))
        if customer_service is not None:
            from apps.customer_service import api as cs_api
            from apps.customer_service.service import CustomerService

            cs_api.mount(app, CustomerService.start(customer_service, engine=engine, base=settings.model))
        if code_assist is not None:
            from apps.code_assist import api as code_api
            from apps.code_assist.service import CodeAssist

            code_api.mount(app, CodeAssist.start(code_assist, engine=engine, base=settings.model))
        if medical is not None:
            from apps.medical import api as medical_api
            from apps.medical.service import MedicalService

            medical_api.mount(app, MedicalService.start(medical))
        if finance is not None:
            from apps.finance_risk import api as finance_api
            from apps.finance_risk.service import FinanceService

            finance_api.mount(app, FinanceService.start(finance))
        if industrial_qc is not None:
            from apps.industrial_qc import api as qc_api
            from apps.industrial_qc.service import QCService

            qc_api.mount(app, QCService.start(industrial_qc))
    except BaseException:
        engine.shutdown()  # helper processes, if any, do not outlive a failed start
        raise
    return app
