"""Byte-level BPE tokenizer for the suite: training, chat and FIM prompts, Hugging Face directories.

`Tokenizer` wraps a `tokenizers.Tokenizer` with the fields of a `tokenizer_config.json` (special
tokens, chat template, max length): what `save` writes loads in `transformers.AutoTokenizer`, and a
checkpoint's tokenizer directory (a DeepSeek release, say) loads here. Being byte-level, any full id
list decodes to valid text. It is not a streaming decoder, does not pad or batch, and does not
import transformers (the tests use it only to prove the saved files are compatible).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from .fim import fim_template

log = logging.getLogger(__name__)

BOS = "<|bos|>"
EOS = "<|eos|>"
PAD = "<|pad|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END_OF_TURN = "<|end|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
# Order is the id order: these take ids 0..len-1 in every tokenizer we train.
SPECIAL_TOKENS = (BOS, EOS, PAD, SYSTEM, USER, ASSISTANT, END_OF_TURN, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)
DEFAULT_MODEL_MAX_LENGTH = 4096
ASSETS_DIR = Path(__file__).parent / "assets"

# `{bos}<|role|>\n{content}<|end|>\n ...` and, for generation, a trailing `<|assistant|>\n`.
# Written for transformers' Jinja environment too (trim_blocks, lstrip_blocks, raise_exception).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown chat role ' ~ message['role'] ~ '; expected system, user or assistant') }}"
    "{% endif %}"
    "{{ '<|' ~ message['role'] ~ '|>\\n' ~ message['content'] ~ '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the `tokenizer_config.json` fields the suite uses.

    `add_bos_token` is read and written back for compatibility but never applied implicitly:
    pass `add_bos=True` to `encode` when a sequence needs it (chat templates add it themselves).
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = BOS,
        eos_token: str | None = EOS,
        pad_token: str | None = PAD,
        chat_template: str | None = CHAT_TEMPLATE,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        add_bos_token: bool = False,
    ):
        self.backend = backend
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.chat_template = chat_template
        self.model_max_length = model_max_length
        self.add_bos_token = add_bos_token

    @property
    def vocab_size(self) -> int:
        """Ids the embedding must cover, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int | None:
        return self.token_to_id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return self.token_to_id(self.eos_token)

    @property
    def pad_id(self) -> int | None:
        return self.token_to_id(self.pad_token)

    @property
    def chat_stop_ids(self) -> tuple[int, ...]:
        """The tokens that end a reply generated after `apply_chat_template(...,
        add_generation_prompt=True)`: the template's end of turn (`<|end|>` in ours, when the
        template writes it and the vocabulary has it) and eos. Without them as stops a model that
        ends its turn properly goes on writing past it."""
        end_of_turn = self.token_to_id(END_OF_TURN) if END_OF_TURN in (self.chat_template or "") else None
        return tuple(i for i in (end_of_turn, self.eos_id) if i is not None)

    def token_to_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if not add_bos:
            return ids
        if self.bos_id is None:
            raise ValueError("add_bos=True but this tokenizer has no bos_token")
        return [self.bos_id, *ids]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False
    ) -> str:
        """Render `messages` ([{"role": ..., "content": ...}]) with this tokenizer's chat template."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat_template; add one to tokenizer_config.json")
        return _compile_chat_template(self.chat_template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
            pad_token=self.pad_token or "",
        )

    def encode_chat(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False
    ) -> list[int]:
        # The template already holds the bos token, as text that encodes to the special id.
        return self.encode(self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt))

    def fim_prompt(self, prefix: str, suffix: str) -> str:
        """Fill-in-the-middle prompt in the format and order of this tokenizer's model family
        (`core_model.fim`); the model writes the middle."""
        return fim_template(self).prompt(prefix, suffix)

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json; return the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        _write_json(directory / "tokenizer_config.json", self._config())
        _write_json(directory / "special_tokens_map.json", self._special_tokens_map())
        log.info("saved tokenizer (%d ids) to %s", self.vocab_size, directory)
        return directory

    @classmethod
    def from_directory(cls, path: str | Path) -> Tokenizer:
        """Load a Hugging Face tokenizer directory: ours, or a checkpoint's from another project."""
        path = Path(path)
        tokenizer_json = path / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {tokenizer_json}")
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        return cls(
            tokenizers.Tokenizer.from_file(str(tokenizer_json)),
            bos_token=_token_content(config.get("bos_token")),
            eos_token=_token_content(config.get("eos_token")),
            pad_token=_token_content(config.get("pad_token")),
            chat_template=_read_chat_template(path, config),
            model_max_length=int(config.get("model_max_length") or DEFAULT_MODEL_MAX_LENGTH),
            add_bos_token=bool(config.get("add_bos_token", False)),
        )

    def _config(self) -> dict[str, Any]:
        added = self.backend.get_added_tokens_decoder()
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "add_bos_token": self.add_bos_token,
            "chat_template": self.chat_template,
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": False,
            "additional_special_tokens": self._special_tokens_map()["additional_special_tokens"],
            "added_tokens_decoder": {str(i): _added_token_dict(added[i]) for i in sorted(added)},
        }

    def _special_tokens_map(self) -> dict[str, Any]:
        named = {"bos_token": self.bos_token, "eos_token": self.eos_token, "pad_token": self.pad_token}
        named = {key: token for key, token in named.items() if token is not None}
        added = self.backend.get_added_tokens_decoder()
        extra = [t.content for _, t in sorted(added.items()) if t.special and t.content not in named.values()]
        return {**named, "additional_special_tokens": extra}


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2, show_progress: bool = False
) -> Tokenizer:
    """Train a byte-level BPE on `texts`; the special tokens take ids 0..len(SPECIAL_TOKENS)-1."""
    smallest = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < smallest:
        raise ValueError(f"vocab_size={vocab_size} is below {smallest} (special tokens + 256 byte symbols)")
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # added as special tokens, in this order, first
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, so nothing is unknown
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend)


def load_tokenizer(source: str | Path) -> Tokenizer:
    """Load from a directory holding tokenizer.json, or from a preset shipped in core_model/assets/."""
    path = Path(source)
    if isinstance(source, Path) or len(path.parts) > 1 or path.exists():
        return Tokenizer.from_directory(path)
    preset_dir = ASSETS_DIR / str(source)
    if (preset_dir / "tokenizer.json").is_file():
        return Tokenizer.from_directory(preset_dir)
    shipped = sorted(p.parent.name for p in ASSETS_DIR.glob("*/tokenizer.json"))
    raise FileNotFoundError(
        f"preset {source!r} ships no tokenizer (looked for {preset_dir / 'tokenizer.json'}); "
        f"presets with a tokenizer: {', '.join(shipped) or 'none'}. "
        "Pass a checkpoint directory holding tokenizer.json instead."
    )


def _token_content(value: str | dict[str, Any] | None) -> str | None:
    # tokenizer_config.json writes a token as a string or as {"content": ..., "lstrip": ..., ...}.
    return value.get("content") if isinstance(value, dict) else value


def _read_chat_template(path: Path, config: dict[str, Any]) -> str | None:
    # transformers 5 saves the template to chat_template.jinja; older files keep it in the config,
    # either as a string or as a list of {"name", "template"} with one named "default".
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry["name"]: entry["template"] for entry in template}
        return named.get("default")
    return template


def _added_token_dict(token: tokenizers.AddedToken) -> dict[str, Any]:
    fields = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    return {field: getattr(token, field) for field in fields}


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _raise_exception(message: str) -> None:
    raise ValueError(message)


@functools.lru_cache(maxsize=8)
def _compile_chat_template(template: str) -> Any:
    """Compile like transformers does (sandboxed, trim/lstrip blocks, loop controls) so text matches."""
    import jinja2.ext  # imported here: only chat templates need jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)
