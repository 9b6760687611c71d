"""LangChain's `ChatOpenAI`, unchanged, against the running server (streaming included).

.venv/bin/python -m pytest tests/core_model/serve/test_langchain_client.py -q
"""

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from core_model.engine import SamplingParams

from .conftest import MODEL_NAME

CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime."}]
MESSAGES = [SystemMessage("You are terse."), HumanMessage("Name a prime.")]


def _expected_text(engine, tokenizer) -> str:
    ids = tokenizer.encode_chat(CHAT, add_generation_prompt=True)
    [output] = engine.generate([ids], SamplingParams(max_tokens=6, temperature=0))
    return output.text


def test_chat_openai_invokes_and_streams(base_url, engine, tokenizer):
    chat = ChatOpenAI(
        base_url=f"{base_url}/v1", api_key="unused", model=MODEL_NAME, temperature=0, max_tokens=6
    )
    expected = _expected_text(engine, tokenizer)
    assert chat.invoke(MESSAGES).content == expected
    assert "".join(chunk.content for chunk in chat.stream(MESSAGES)) == expected
