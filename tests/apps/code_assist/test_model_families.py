"""A checkpoint of another model family completes in its own fill-in-the-middle format: a tiny
checkpoint whose tokenizer spells the sentinels as DeepSeek-Coder's, served by the suite.

.venv/bin/python -m pytest tests/apps/code_assist/test_model_families.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from apps.code_assist.settings import CodeAssistSettings
from apps.suite import create_app
from core_model.serve import ServeSettings
from tests.loopback import serving

# Ours -> DeepSeek-Coder's: the same ids, so the tiny model's embeddings still line up.
DEEPSEEK_CODER = {
    "<|fim_prefix|>": "<｜fim▁begin｜>",
    "<|fim_suffix|>": "<｜fim▁hole｜>",
    "<|fim_middle|>": "<｜fim▁end｜>",
    "<|eos|>": "<｜end▁of▁sentence｜>",
}


@pytest.fixture(scope="module")
def deepseek_coder_checkpoint(checkpoint, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("deepseek_coder")
    for path in checkpoint.iterdir():
        text = path.read_text(encoding="utf-8") if path.suffix == ".json" else None
        if text is None:
            shutil.copy(path, directory / path.name)
            continue
        for ours, theirs in DEEPSEEK_CODER.items():
            text = text.replace(json.dumps(ours)[1:-1], json.dumps(theirs, ensure_ascii=False)[1:-1])
        (directory / path.name).write_text(text, encoding="utf-8")
    return directory


def test_a_deepseek_coder_checkpoint_gets_its_own_fim_format_and_no_foreign_adapter(
    deepseek_coder_checkpoint, tmp_path
):
    settings = CodeAssistSettings(database_url=f"sqlite:///{tmp_path / 'code.db'}")
    app = create_app(ServeSettings(model=str(deepseek_coder_checkpoint)), code_assist=settings)
    body = {
        "language": "python",
        "segments": {"prefix": "def f(x):\n    return ", "suffix": "\n"},
        "debug_options": {"return_prompt": True},
    }
    with serving(app) as url:
        health = httpx.get(f"{url}/code/v1/health").json()
        out = httpx.post(f"{url}/code/v1/completions", json=body, timeout=60).json()
    assert health["model"] == str(deepseek_coder_checkpoint)  # the shipped adapter is for the embedded model
    assert out["debug_data"]["prompt"] == "<｜fim▁begin｜>def f(x):\n    return <｜fim▁hole｜>\n<｜fim▁end｜>"
    assert isinstance(out["choices"][0]["text"], str)
