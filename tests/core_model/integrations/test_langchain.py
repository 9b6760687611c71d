"""LangChain's chat-model interface over the in-process engine.

.venv/bin/python -m pytest tests/core_model/integrations/test_langchain.py -q
"""

import asyncio
import json
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from core_model import load_model, train_tokenizer
from core_model.engine import Engine, SamplingParams
from core_model.integrations.langchain import EngineChatModel

MESSAGES = [SystemMessage("You help with cards."), HumanMessage("Where is my card?")]


@pytest.fixture(scope="module")
def engine():
    texts = [Path(json.__file__).read_text(), Path(asyncio.__file__).read_text()]
    return Engine(load_model("tiny"), train_tokenizer(texts, vocab_size=512))


def _expected(engine, max_tokens):
    chat = [
        {"role": "system", "content": "You help with cards."},
        {"role": "user", "content": "Where is my card?"},
    ]
    ids = engine.tokenizer.encode_chat(chat, add_generation_prompt=True)
    [output] = engine.generate([ids], SamplingParams(max_tokens=max_tokens, temperature=0))
    return output


def test_invoke_returns_what_the_engine_generates(engine):
    reply = EngineChatModel(engine=engine, max_tokens=8, temperature=0).invoke(MESSAGES)
    expected = _expected(engine, 8)
    assert reply.content == expected.text
    assert reply.response_metadata["completion_tokens"] == len(expected.token_ids)


def test_stream_and_astream_concatenate_to_the_same_text(engine):
    chat = EngineChatModel(engine=engine, max_tokens=8, temperature=0)
    streamed = "".join(chunk.content for chunk in chat.stream(MESSAGES))

    async def collect():
        return "".join([chunk.content async for chunk in chat.astream(MESSAGES)])

    assert streamed == asyncio.run(collect()) == _expected(engine, 8).text
