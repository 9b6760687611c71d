"""`CodeAssist`: completions for editors, on the suite's engine.

    assist = CodeAssist.start(CodeAssistSettings(index_dir="runs/index"), engine=engine, base="embedded")
    out = await assist.complete(CompletionIn(language="python", segments=Segments(prefix=..., suffix=...)))
    assist.record_event(EventIn(type="select", completion_id=out.id))

A completion: the snippets (the editor's declarations and relevant snippets, then the repository
index's best for the cursor, within the prompt's budget), the fill-in-the-middle prompt of the
model's family (`prompts.py`), the engine with the code adapter, then post-processing (scope,
suffix overlap, syntax: `postprocess.py`), stored with its latency. It builds no HTTP responses
(`api.py`) and holds no SQL (`store.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import time
import uuid
from collections.abc import Callable
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import torch
from sqlalchemy.orm import Session, sessionmaker

from core_model.engine import Engine, SamplingParams
from core_model.fim import FimTemplate, fim_template
from core_model.healing import HealedPrompt
from core_model.serve.adapters import register_adapter
from core_model.storage import make_engine, session_factory
from core_model.train.adapters import adapter_base

from . import store
from .database import MIGRATIONS
from .languages import canonical
from .postprocess import is_looping, postprocess, scope_is_settled
from .prompts import (
    COPY_MIN_MATCH,
    COPY_UNTIL,
    CompletionPrompt,
    CursorContext,
    SnippetTokens,
    build_prompt,
    cursor_context,
    engine_prompt,
)
from .repository_index import RepositoryIndex, Snippet
from .schemas import (
    ChoiceOut,
    CompletionIn,
    CompletionOut,
    DebugDataOut,
    EvaluationOut,
    EventIn,
    HealthOut,
    LanguageStatsOut,
    SnippetOut,
    StatsOut,
    VersionOut,
)
from .settings import ADAPTER_NAME, ASSETS, CodeAssistSettings

log = logging.getLogger(__name__)


class InvalidCompletionRequest(ValueError):
    """A request the service cannot answer as sent (the API turns it into a 400)."""


@dataclass
class CodeAssist:
    settings: CodeAssistSettings
    sessions: sessionmaker[Session]
    engine: Engine
    template: FimTemplate
    model_name: str  # as stored and reported: the base, or "base:adapter"
    adapter: str | None  # the engine's adapter name; None: the base model
    index: RepositoryIndex | None
    snippet_tokens: SnippetTokens  # what completions copy from, encoded

    @classmethod
    def start(cls, settings: CodeAssistSettings, *, engine: Engine, base: str = "embedded") -> CodeAssist:
        """Migrates the database, loads the repository index and registers the code adapter on
        `engine` when it was trained on `base`. A ValueError when the model cannot fill in the
        middle (its tokenizer has no FIM tokens) or an adapter named explicitly does not fit it."""
        database = make_engine(settings.database_url)
        MIGRATIONS.upgrade(database)
        template = fim_template(engine.tokenizer)
        adapter = None
        if settings.adapter is not None:
            if adapter_base(settings.adapter) == base:
                register_adapter(engine, ADAPTER_NAME, settings.adapter)
                adapter = ADAPTER_NAME
            elif settings.adapter == str(ASSETS / "fim"):
                log.info(
                    "the shipped code adapter is for the embedded model: %s serves completions alone", base
                )
            else:
                trained_on = adapter_base(settings.adapter)
                raise ValueError(f"the code adapter {settings.adapter} is for {trained_on!r}, not {base!r}")
        index = RepositoryIndex.load(settings.index_dir) if settings.index_dir else None
        name = f"{base}:{adapter}" if adapter else base
        log.info(
            "code assist: %s, %s template, index %s", name, template.family, settings.index_dir or "none"
        )
        return cls(
            settings,
            session_factory(database),
            engine,
            template,
            name,
            adapter,
            index,
            SnippetTokens(engine.tokenizer),
        )

    @contextmanager
    def _session(self):
        with self.sessions() as session, session.begin():
            yield session

    # ------------------------------------------------------------------------- completions

    async def complete(self, request: CompletionIn) -> CompletionOut:
        started = time.perf_counter()
        segments = request.segments
        debug = request.debug_options
        if segments is None and not (debug and debug.raw_prompt):
            raise InvalidCompletionRequest(
                "segments (with at least a prefix) or debug_options.raw_prompt is required"
            )
        language = request.language or "plaintext"
        tokenizer = self.engine.tokenizer
        copying: tuple[tuple[int, ...], ...] = ()
        if debug and debug.raw_prompt:
            prompt = CompletionPrompt(debug.raw_prompt, "", "", "")
        else:
            use_index = self.settings.context and not (
                debug and debug.disable_retrieval_augmented_code_completion
            )
            context = await asyncio.to_thread(self.snippets, request, use_index=use_index)
            prompt = build_prompt(
                self.template,
                prefix=segments.prefix,
                suffix=segments.suffix or "",
                language=canonical(language),
                snippets=context.prompt,
            )
            if self.settings.copy_bias:
                copying = await asyncio.to_thread(self.snippet_tokens.sources, context.copy)
        # A raw prompt is the caller's exact text.
        healed = engine_prompt(tokenizer, prompt.text, healed=not (debug and debug.raw_prompt))
        params = SamplingParams(
            max_tokens=self.settings.max_tokens,
            temperature=self.settings.temperature if request.temperature is None else request.temperature,
            seed=request.seed,
            stop_token_ids=self.template.stop_ids(tokenizer),
            first_token_ids=healed.first_token_ids,
            copy_from=copying,
            copy_bias=self.settings.copy_bias if copying else 0.0,
            copy_min_match=COPY_MIN_MATCH,
            copy_until=COPY_UNTIL,
        )
        settled = None  # generating past what post-processing keeps is wasted time
        if segments is not None:
            settled = partial(
                scope_is_settled,
                prefix=segments.prefix,
                suffix=segments.suffix or "",
                language=canonical(language),
            )
        raw = await self._generate(healed, params, settled=settled)
        if debug and debug.raw_prompt:
            text = raw.rstrip()
        else:
            text = await asyncio.to_thread(
                postprocess,
                raw,
                prefix=segments.prefix,
                suffix=segments.suffix or "",
                language=canonical(language),
            )
        completion_id = f"cmpl-{uuid.uuid4()}"
        latency_ms = (time.perf_counter() - started) * 1000
        await asyncio.to_thread(
            self._store,
            completion_id,
            request,
            language=language,
            snippets=len(prompt.snippets),
            text=text,
            raw=raw,
            latency_ms=latency_ms,
        )
        return CompletionOut(
            id=completion_id,
            choices=[ChoiceOut(index=0, text=text)],
            debug_data=self._debug(debug, prompt),
        )

    def snippets(self, request: CompletionIn, *, use_index: bool) -> CursorContext:
        """The editor's declarations and snippets, then the index's best (`cursor_context`)."""
        segments = request.segments
        given = [Snippet(d.filepath, d.body, 1.0, 0, None) for d in segments.declarations or []]
        for field in (
            segments.relevant_snippets,
            segments.relevant_snippets_from_changed_files,
            segments.relevant_snippets_from_recently_opened_files,
        ):
            given += [Snippet(s.filepath, s.body, s.score, 0, None) for s in field or []]
        ranked: list[Snippet] = []
        if use_index and self.index is not None:
            ranked = self.index.ranked_snippets(
                prefix=segments.prefix,
                suffix=segments.suffix or "",
                filepath=segments.filepath,
                language=canonical(request.language),
            )
        return cursor_context(given, ranked, current=segments.filepath)

    async def _generate(
        self, prompt: HealedPrompt, params: SamplingParams, *, settled: Callable[[str], bool] | None = None
    ) -> str:
        """The text generated after the (unhealed) prompt, stopped early once `settled(text)` says
        post-processing keeps nothing more, or once the model loops (closing the stream frees the
        request's place in the batch)."""
        try:
            self.engine.check(prompt.ids, params)
        except ValueError as error:
            raise InvalidCompletionRequest(str(error)) from None
        text = ""
        async with aclosing(self.engine.stream(prompt.ids, params, adapter=self.adapter)) as outputs:
            async for output in outputs:
                text += output.delta_text
                if settled is None:
                    continue
                completion = prompt.completion_of(text)
                if is_looping(completion) or ("\n" in output.delta_text and settled(completion)):
                    break
        return prompt.completion_of(text)

    def _store(self, completion_id: str, request: CompletionIn, *, language, snippets, text, raw, latency_ms):
        with self._session() as session:
            store.add_completion(
                session,
                id=completion_id,
                language=language,
                filepath=request.segments.filepath if request.segments else None,
                user=request.user,
                model=self.model_name,
                snippets=snippets,
                text=text,
                raw_text=raw,
                latency_ms=latency_ms,
            )

    @staticmethod
    def _debug(debug, prompt: CompletionPrompt) -> DebugDataOut | None:
        if debug is None or not (debug.return_prompt or debug.return_snippets):
            return None
        return DebugDataOut(
            prompt=prompt.text if debug.return_prompt else None,
            snippets=[SnippetOut(filepath=s.filepath, body=s.body, score=s.score) for s in prompt.snippets]
            if debug.return_snippets
            else None,
        )

    # ------------------------------------------------------------------------- events and reports

    def record_event(self, event: EventIn, *, select_kind: str | None = None) -> None:
        """Store an editor's event; a store.UnknownCompletion for an id this server never issued."""
        with self._session() as session:
            store.add_event(
                session,
                completion_id=event.completion_id,
                type=event.type,
                choice_index=event.choice_index,
                view_id=event.view_id,
                elapsed_ms=event.elapsed,
                select_kind=select_kind,
            )

    def stats(self) -> StatsOut:
        with self._session() as session:
            rows = store.language_stats(session)
        languages = [
            LanguageStatsOut(
                language=r.language,
                completions=r.completions,
                views=r.views,
                selects=r.selects,
                acceptance_rate=r.acceptance_rate,
                mean_latency_ms=r.mean_latency_ms,
            )
            for r in rows
        ]
        views, selects = sum(r.views for r in rows), sum(r.selects for r in rows)
        return StatsOut(
            languages=languages,
            completions=sum(r.completions for r in rows),
            views=views,
            selects=selects,
            acceptance_rate=selects / views if views else None,
        )

    def evaluations(self) -> list[EvaluationOut]:
        """The reports `verticals code eval` wrote to the evaluations folder, newest first (a file
        that is not a report is skipped with a warning)."""
        folder = Path(self.settings.evaluations_dir)
        paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        reports = []
        for path in paths:
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
                settings = report["settings"]
                reports.append(
                    EvaluationOut(
                        name=path.name,
                        created_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
                        benchmark=settings["benchmark"],
                        model=settings["model"],
                        adapter=settings.get("adapter"),
                        samples=settings["samples"],
                        temperature=settings["temperature"],
                        problems=len(report["problems"]),
                        pass_at={k: v for k, v in report.items() if k.startswith("pass@")},
                        statuses=report.get("statuses", {}),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("skipping %s: not an evaluation report (%s)", path, error)
        return reports

    def health(self) -> HealthOut:
        device = next(self.engine.model.parameters()).device.type
        cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return HealthOut(
            model=self.model_name,
            device=device,
            arch=platform.machine(),
            cpu_info=platform.processor() or platform.machine(),
            cpu_count=os.cpu_count() or 1,
            cuda_devices=cuda,
            version=VersionOut(git_describe="verticals"),
        )
