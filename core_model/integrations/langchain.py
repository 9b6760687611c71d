"""A LangChain chat model over the in-process engine: apps call the model with no HTTP in between.

    from core_model.integrations.langchain import EngineChatModel
    chat = EngineChatModel(engine=engine, max_tokens=64, temperature=0)
    chat.invoke("Where is my card?")             # an AIMessage
    async for chunk in chat.astream("Hello"): ...

The prompt is built with the tokenizer's own chat template. It is not an HTTP client: against a
running `verticals serve`, use langchain-openai's `ChatOpenAI(base_url=...)` unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from ..engine import Engine, RequestOutput, SamplingParams

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


class EngineChatModel(BaseChatModel):
    """Chat completions from an `Engine` in this process, streaming included."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Engine
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None

    @property
    def _llm_type(self) -> str:
        return "verticals-engine"

    def _prompt_ids(self, messages: list[BaseMessage]) -> list[int]:
        tokenizer = self.engine.tokenizer
        if tokenizer is None:
            raise ValueError("the engine has no tokenizer: a chat model needs its chat template")
        chat = []
        for message in messages:
            if message.type not in _ROLES:
                raise ValueError(f"unsupported message type {message.type!r}; use system, human or ai")
            chat.append({"role": _ROLES[message.type], "content": message.text})
        return tokenizer.encode_chat(chat, add_generation_prompt=True)

    def _params(self, stop: list[str] | None) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(stop or ()),
            stop_token_ids=self.engine.tokenizer.chat_stop_ids if self.engine.tokenizer else (),
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        [output] = self.engine.generate([self._prompt_ids(messages)], self._params(stop))
        message = AIMessage(content=output.text, response_metadata=_metadata(output))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for output in self.engine.iterate(self._prompt_ids(messages), self._params(stop)):
            chunk = _chunk(output)
            if run_manager is not None:
                run_manager.on_llm_new_token(output.delta_text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for output in self.engine.stream(self._prompt_ids(messages), self._params(stop)):
            chunk = _chunk(output)
            if run_manager is not None:
                await run_manager.on_llm_new_token(output.delta_text, chunk=chunk)
            yield chunk


def _chunk(output: RequestOutput) -> ChatGenerationChunk:
    metadata = _metadata(output) if output.finished else {}
    return ChatGenerationChunk(message=AIMessageChunk(content=output.delta_text, response_metadata=metadata))


def _metadata(output: RequestOutput) -> dict[str, Any]:
    return {
        "finish_reason": output.finish_reason,
        "prompt_tokens": len(output.prompt_token_ids),
        "completion_tokens": len(output.token_ids),
    }
