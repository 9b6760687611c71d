"""MoEConfig: the architecture of a DeepSeek-V2/V3-family model, and its named presets.

It reads and writes the Hugging Face `config.json` of `model_type` `deepseek_v3` and
`deepseek_v2`, keeping every field that changes the maths, and it does the memory arithmetic
(parameters, active parameters, latent KV-cache bytes) for any shape, including the real ones.
It is not the model (see `model.py`) and holds no weights.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_MODEL_TYPES = ("deepseek_v3", "deepseek_v2")
TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
SCORING_FUNCS = ("softmax", "sigmoid")

# Routing defaults differ between the two families when a config.json leaves them out
# (transformers 5 writes DeepSeek-V3 configs without `topk_method` and `scoring_func`).
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "deepseek_v3": {
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "n_group": 8,
        "topk_group": 4,
        "first_k_dense_replace": 3,
        "n_shared_experts": 1,
    },
    "deepseek_v2": {
        "topk_method": "greedy",
        "scoring_func": "softmax",
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "n_group": 1,
        "topk_group": 1,
        "first_k_dense_replace": 0,
        "n_shared_experts": 2,
    },
}
_ARCHITECTURES = {"deepseek_v3": "DeepseekV3ForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM"}


class ConfigError(ValueError):
    """A config.json (or preset) that this suite cannot build a model from."""


@dataclass
class MoEConfig:
    """Architecture of a DeepSeek-style MoE decoder. Field names are those of config.json."""

    model_type: str = "deepseek_v3"
    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128  # dense (non-MoE) layers
    moe_intermediate_size: int = 32  # one routed or shared expert
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    # Multi-head Latent Attention
    q_lora_rank: int | None = 32  # None: queries through one direct projection
    kv_lora_rank: int = 32
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 8
    v_head_dim: int = 16
    # DeepSeekMoE
    n_routed_experts: int | None = 8  # None: every layer is dense
    n_shared_experts: int | None = 1
    num_experts_per_tok: int = 2
    first_k_dense_replace: int = 1
    moe_layer_freq: int = 1
    n_group: int = 1
    topk_group: int = 1
    topk_method: str = "noaux_tc"
    scoring_func: str = "sigmoid"
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    aux_loss_alpha: float = 0.0  # weight of the optional sequence-wise balance loss
    # Positions and norms
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"type": "yarn", "factor": ..., ...}
    rope_interleave: bool = True  # rotary dims stored as interleaved pairs, as DeepSeek ships them
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None  # ours: attend to at most this many previous tokens
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    bos_token_id: int | None = 0
    eos_token_id: int | None = 1
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # other config.json keys, kept

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------------------- shapes
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer_idx: int) -> bool:
        return (
            self.n_routed_experts is not None
            and layer_idx >= self.first_k_dense_replace
            and layer_idx % self.moe_layer_freq == 0
        )

    @property
    def softmax_scale(self) -> float:
        """Attention logit scale: 1/sqrt(qk_head_dim), times mscale^2 under YaRN (DeepSeek-V2 paper)."""
        scale = self.qk_head_dim**-0.5
        rope = self.rope_scaling or {}
        if rope.get("type") == "yarn" and rope.get("mscale_all_dim"):
            mscale = yarn_mscale(rope["factor"], rope["mscale_all_dim"])
            scale *= mscale * mscale
        return scale

    def validate(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"unsupported model_type {self.model_type!r}; expected one of {SUPPORTED_MODEL_TYPES}"
            )
        if self.hidden_act != "silu":
            raise ConfigError(f"unsupported hidden_act {self.hidden_act!r}; only 'silu' is implemented")
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"qk_rope_head_dim must be even, got {self.qk_rope_head_dim}")
        if self.topk_method not in TOPK_METHODS:
            raise ConfigError(f"unsupported topk_method {self.topk_method!r}; expected one of {TOPK_METHODS}")
        if self.scoring_func not in SCORING_FUNCS:
            raise ConfigError(
                f"unsupported scoring_func {self.scoring_func!r}; expected one of {SCORING_FUNCS}"
            )
        if self.rope_scaling is not None and self.rope_scaling.get("type") not in ("yarn", "default"):
            raise ConfigError(f"unsupported rope_scaling type {self.rope_scaling.get('type')!r}; use 'yarn'")
        if self.n_routed_experts is not None:
            if self.n_routed_experts % self.n_group:
                raise ConfigError(
                    f"n_routed_experts ({self.n_routed_experts}) is not divisible by n_group ({self.n_group})"
                )
            if not 1 <= self.topk_group <= self.n_group:
                raise ConfigError(f"topk_group ({self.topk_group}) must be in [1, n_group={self.n_group}]")
            reachable = self.topk_group * self.n_routed_experts // self.n_group
            if self.num_experts_per_tok > reachable:
                raise ConfigError(
                    f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds the {reachable} experts "
                    f"in the {self.topk_group} groups a token may use"
                )

    # ----------------------------------------------------------------------------- arithmetic
    def num_parameters(self, *, active: bool = False) -> int:
        """Parameters of the causal LM, counted from the shapes; `active`: used by one token."""
        d = self.hidden_size
        q = (
            d * self.num_attention_heads * self.qk_head_dim
            if self.q_lora_rank is None
            else d * self.q_lora_rank
            + self.q_lora_rank
            + self.q_lora_rank * self.num_attention_heads * self.qk_head_dim
        )
        kv = (
            d * (self.kv_lora_rank + self.qk_rope_head_dim)
            + self.kv_lora_rank
            + self.kv_lora_rank * self.num_attention_heads * (self.qk_nope_head_dim + self.v_head_dim)
        )
        attention = q + kv + self.num_attention_heads * self.v_head_dim * d + 2 * d  # + two layer norms
        total = 0
        for layer in range(self.num_hidden_layers):
            total += attention
            if not self.is_moe_layer(layer):
                total += 3 * d * self.intermediate_size
                continue
            expert = 3 * d * self.moe_intermediate_size
            routed = self.num_experts_per_tok if active else self.n_routed_experts or 0
            total += expert * (routed + (self.n_shared_experts or 0)) + d * (self.n_routed_experts or 0)
        embeddings = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return total + embeddings + d

    def kv_cache_bytes_per_token(self, *, dtype_bytes: int = 2) -> int:
        """Latent MLA cache: (kv_lora_rank + qk_rope_head_dim) values per token per layer."""
        return (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes * self.num_hidden_layers

    # ----------------------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str) -> MoEConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls(**copy.deepcopy(PRESETS[name]))  # callers may change the nested dicts

    def replace(self, **changes: Any) -> MoEConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def embedding_trunk(
        cls,
        *,
        hidden_size: int,
        layers: int,
        heads: int,
        experts: int,
        experts_per_token: int,
        positions: int,
    ) -> MoEConfig:
        """A small trunk for inputs that enter as embeddings (a card's events, an image's patches),
        from the few sizes such a vertical model chooses: the tiny preset's structure (a dense
        first layer, then MoE layers with one shared expert) scaled to `hidden_size` (latent ranks
        and expert widths half of it), one routing group, no vocabulary to speak of."""
        D, head_dim = hidden_size, hidden_size // heads
        return cls.preset("tiny").replace(
            vocab_size=1, hidden_size=D, intermediate_size=2 * D, moe_intermediate_size=D // 2,
            num_hidden_layers=layers, num_attention_heads=heads, q_lora_rank=D // 2, kv_lora_rank=D // 2,
            qk_nope_head_dim=head_dim, qk_rope_head_dim=max(2, head_dim // 2), v_head_dim=head_dim,
            n_routed_experts=experts, num_experts_per_tok=experts_per_token, n_group=1, topk_group=1,
            max_position_embeddings=positions,
        )  # fmt: skip

    # ----------------------------------------------------------------------------- config.json
    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], *, source: str = "config.json") -> MoEConfig:
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"{source}: unsupported model_type {model_type!r}; expected one of {SUPPORTED_MODEL_TYPES}"
            )
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = fields - {"rope_scaling", "rope_theta"}
        values: dict[str, Any] = dict(_FAMILY_DEFAULTS[model_type])
        values.update({k: v for k, v in raw.items() if k in known and v is not None})
        values["q_lora_rank"] = raw.get("q_lora_rank")  # None is meaningful: the direct query path
        values["sliding_window"] = raw.get("sliding_window")
        values["rope_theta"], values["rope_scaling"] = _read_rope(raw)
        for key in ("n_group", "topk_group"):  # DeepSeek-V2 configs write null for "no groups"
            values[key] = values.get(key) or 1
        if model_type == "deepseek_v3" and "rope_interleave" not in raw:
            values["rope_interleave"] = True
        values["extra"] = {k: v for k, v in raw.items() if k not in fields and k not in _DERIVED_KEYS}
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architectures": [_ARCHITECTURES[self.model_type]],
            **copy.deepcopy(self.extra),
        }
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = copy.deepcopy(getattr(self, f.name))  # transformers edits rope dicts in place
        # Written so that transformers 4 and 5, vLLM and SGLang all read it.
        out["num_key_value_heads"] = self.num_attention_heads
        out["head_dim"] = self.qk_rope_head_dim
        if self.model_type == "deepseek_v2" and self.n_group == 1:
            out["n_group"] = out["topk_group"] = None
        return out

    @classmethod
    def from_json_file(cls, path: str | Path) -> MoEConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no config.json at {path}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON (line {error.lineno}): {error.msg}") from None
        return cls.from_hf_dict(raw, source=str(path))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "config.json"
        path.write_text(json.dumps(self.to_hf_dict(), indent=2, sort_keys=True) + "\n")
        return path


# Keys transformers derives from the others, and the FP8 quantisation that loading undoes:
# dropped on read so they are never stale on write.
_DERIVED_KEYS = {
    "quantization_config",
    "architectures",
    "rope_parameters",
    "num_key_value_heads",
    "head_dim",
    "qk_head_dim",
    "transformers_version",
    "torch_dtype",
    "dtype",
}


def _read_rope(raw: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """Both spellings: legacy `rope_theta` + `rope_scaling`, and transformers 5 `rope_parameters`."""
    params = dict(raw.get("rope_parameters") or {})
    theta = float(params.pop("rope_theta", raw.get("rope_theta", 10000.0)))
    scaling = dict(raw.get("rope_scaling") or params)
    rope_type = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    scaling.pop("type", None)
    if rope_type == "default":
        return theta, None
    return theta, {"type": rope_type, **scaling}


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN attention temperature (https://arxiv.org/abs/2309.00071), as DeepSeek-V2 uses it."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


_YARN_40X = {
    "type": "yarn",
    "factor": 40,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32,
    "beta_slow": 1,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Every fast test builds this one.
    "tiny": {
        "vocab_size": 512,  # room for a byte-level BPE: 256 bytes + special tokens + merges
        "hidden_size": 64,
        "intermediate_size": 128,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "q_lora_rank": 32,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "n_group": 2,
        "topk_group": 1,
        "routed_scaling_factor": 2.5,
        "max_position_embeddings": 512,
    },
    # The shipped default: 14.4 M parameters (8.5 M active per token), 27 MiB in bfloat16.
    "embedded": {
        "vocab_size": 8192,
        "hidden_size": 256,
        "intermediate_size": 768,
        "moe_intermediate_size": 128,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "q_lora_rank": 128,
        "kv_lora_rank": 64,
        "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16,
        "v_head_dim": 32,
        "n_routed_experts": 16,
        "n_shared_experts": 1,
        "num_experts_per_tok": 4,
        "first_k_dense_replace": 1,
        "n_group": 4,
        "topk_group": 2,
        "routed_scaling_factor": 2.5,
        "max_position_embeddings": 2048,
    },
    # For benchmarks (about 215 M parameters).
    "small": {
        "vocab_size": 32000,
        "hidden_size": 768,
        "intermediate_size": 2048,
        "moe_intermediate_size": 160,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "q_lora_rank": 384,
        "kv_lora_rank": 256,
        "qk_nope_head_dim": 64,
        "qk_rope_head_dim": 32,
        "v_head_dim": 64,
        "n_routed_experts": 32,
        "n_shared_experts": 2,
        "num_experts_per_tok": 4,
        "first_k_dense_replace": 1,
        "n_group": 4,
        "topk_group": 2,
        "routed_scaling_factor": 2.5,
        "max_position_embeddings": 4096,
    },
    # Real shapes, for memory arithmetic only: never instantiated in tests.
    "deepseek-v2-lite": {
        "model_type": "deepseek_v2",
        "vocab_size": 102400,
        "hidden_size": 2048,
        "intermediate_size": 10944,
        "moe_intermediate_size": 1408,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "q_lora_rank": None,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "n_routed_experts": 64,
        "n_shared_experts": 2,
        "num_experts_per_tok": 6,
        "first_k_dense_replace": 1,
        "topk_method": "greedy",
        "scoring_func": "softmax",
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "aux_loss_alpha": 0.001,
        "max_position_embeddings": 163840,
        "rope_scaling": {**_YARN_40X, "mscale": 0.707, "mscale_all_dim": 0.707},
        "bos_token_id": 100000,
        "eos_token_id": 100001,
    },
    "deepseek-v3": {
        "vocab_size": 129280,
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "num_hidden_layers": 61,
        "num_attention_heads": 128,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "n_routed_experts": 256,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "first_k_dense_replace": 3,
        "n_group": 8,
        "topk_group": 4,
        "routed_scaling_factor": 2.5,
        "max_position_embeddings": 163840,
        "rope_scaling": {**_YARN_40X, "mscale": 1.0, "mscale_all_dim": 1.0},
    },
}
