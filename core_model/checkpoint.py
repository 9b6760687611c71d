"""Load and save models in the Hugging Face layout: config.json plus (sharded) safetensors.

Reads what transformers and DeepSeek publish: per-expert linears (`mlp.experts.N.gate_proj.weight`,
the released checkpoints and what transformers writes) and the stacked `mlp.experts.gate_up_proj`
/ `down_proj` of transformers 5's memory layout; one file or shards with their index; FP8 weights
with block scales (`weight_scale_inv`, DeepSeek-V3's release), dequantised on load. Tensors are
read one at a time from memory-mapped files, cast, and assigned, so peak memory stays near the
model's own size. Multi-token-prediction layers past `num_hidden_layers` are skipped.

It is not a converter to other formats, and it never downloads anything: `source` is a directory
on disk or a preset name.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import PRESETS, MoEConfig
from .model import MoEForCausalLM

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
INDEX_FILE = "model.safetensors.index.json"
PRESET_SEED = 0
FP8_BLOCK = 128  # DeepSeek-V3 quantises weights in 128 x 128 blocks, one scale each
_PER_EXPERT = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_FP32_TENSORS = (".mlp.gate.weight", ".mlp.gate.e_score_correction_bias")  # routers stay float32
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


class CheckpointError(ValueError):
    """A checkpoint that does not match its config: missing tensors or wrong shapes."""


def load_model(
    source: str | Path, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> MoEForCausalLM:
    """A model from a checkpoint directory or a preset name, in eval mode.

    A preset whose weights ship in `core_model/assets/<name>/` loads them; any other preset is
    random-initialised with a fixed seed, so two calls give the same model.
    """
    directory = _resolve(source)
    if directory is None:
        config = MoEConfig.preset(str(source))
        with torch.device(device or "cpu"):
            model = MoEForCausalLM(config)
        model.init_weights(torch.Generator(device=device or "cpu").manual_seed(PRESET_SEED))
    else:
        config = MoEConfig.from_json_file(directory / "config.json")
        with torch.device("meta"):
            model = MoEForCausalLM(config)
        state = _read_state(directory, config, dtype=dtype, device=device or "cpu")
        _check_state(model, state, directory)
        model.load_state_dict(state, strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        _materialise_buffers(model, device or "cpu")
    if dtype is not None:
        cast_weights(model, dtype)
    return model.eval()


CPU_FLOAT32_MAX_BYTES = 8 * 2**30


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): there a large bfloat16
    matmul runs about twice as fast as in float32 (small ones still do not; see serving_dtype)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def encoder_dtype(device: str) -> torch.dtype:
    """The dtype for a model read over whole texts at once (classifiers, taggers, embedders: their
    matmuls have tens of rows or more): bfloat16 on CUDA and on CPUs that multiply it natively,
    else float32. (A decoder's token-by-token steps are small matmuls: see serving_dtype.)"""
    if device.startswith("cuda") or (device == "cpu" and cpu_has_native_bfloat16()):
        return torch.bfloat16
    return torch.float32


def serving_dtype(source: str, device: str) -> torch.dtype | None:
    """bfloat16 on CUDA. On CPU float32 while it fits in CPU_FLOAT32_MAX_BYTES (oneDNN's small
    bfloat16 matmuls cost several times its float32 ones, and decode is all small matmuls);
    past that, the checkpoint's own dtype (None)."""
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.float32 if source_config(source).num_parameters() * 4 <= CPU_FLOAT32_MAX_BYTES else None


def source_config(source: str) -> MoEConfig:
    """The config of a preset or a checkpoint directory, read without loading any weight."""
    if source in PRESETS:
        return MoEConfig.preset(source)
    return MoEConfig.from_json_file(Path(source) / "config.json")


def _resolve(source: str | Path) -> Path | None:
    path = Path(source)
    if path.is_dir():
        return path
    if str(source) in PRESETS:
        shipped = ASSETS / str(source)
        return shipped if (shipped / "config.json").exists() else None
    raise FileNotFoundError(
        f"{source!r} is neither a checkpoint directory nor a preset ({', '.join(PRESETS)})"
    )


def _shard_files(directory: Path) -> list[Path]:
    index = directory / INDEX_FILE
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [directory / name for name in sorted(set(weight_map.values()))]
        for file in files:
            if not file.exists():
                raise FileNotFoundError(f"{index} names shard {file.name}, which is missing from {directory}")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {directory}")
    return files


def _iter_tensors(directory: Path) -> Iterator[tuple[str, torch.Tensor, Path]]:
    for file in _shard_files(directory):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield key, f.get_tensor(key), file


def _read_state(
    directory: Path, config: MoEConfig, *, dtype: torch.dtype | None, device: str | torch.device
) -> dict[str, torch.Tensor]:
    """Every tensor the decoder needs, cast and placed as it is read (peak: the model plus one layer)."""
    state: dict[str, torch.Tensor] = {}
    scales: dict[str, tuple[torch.Tensor, Path]] = {}
    for key, tensor, file in _iter_tensors(directory):
        layer = _LAYER.match(key)
        if layer and int(layer.group(1)) >= config.num_hidden_layers:
            continue  # multi-token-prediction modules: not part of the decoder
        if key.endswith(".weight_scale_inv"):
            scales[key.removesuffix("_scale_inv")] = (tensor, file)
        else:
            state[key] = tensor if tensor.dtype in _FP8 else _place(key, tensor, dtype, device)
    # FP8 weights become the dtype of the checkpoint's other weights (bfloat16 in DeepSeek-V3's).
    embeddings = state.get("model.embed_tokens.weight")
    dequantised_dtype = dtype or (embeddings.dtype if embeddings is not None else torch.bfloat16)
    for key, (scale, file) in scales.items():
        if key not in state:
            raise CheckpointError(f"{file}: {key}_scale_inv scales {key}, which is missing")
        state[key] = _place(key, dequantise_fp8(state[key], scale), dequantised_dtype, device)
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for key in [k for k in state if _PER_EXPERT.match(k)]:
        prefix, index, proj = _PER_EXPERT.match(key).groups()  # type: ignore[union-attr]
        experts.setdefault(prefix, {}).setdefault(int(index), {})[proj] = state.pop(key)
    while experts:  # one layer at a time, so the per-expert copies are freed as we go
        prefix, by_index = experts.popitem()
        state.update(_stack_experts(prefix, by_index, config, directory))
    return state


def _stack_experts(
    prefix: str, by_index: dict[int, dict[str, torch.Tensor]], config: MoEConfig, directory: Path
) -> dict[str, torch.Tensor]:
    """Per-expert gate/up/down linears -> stacked gate_up_proj [E, 2I, D] and down_proj [E, D, I]."""
    expected = range(config.n_routed_experts or 0)
    missing = [
        f"{prefix}.{i}.{p}.weight"
        for i in expected
        for p in ("gate_proj", "up_proj", "down_proj")
        if p not in by_index.get(i, {})
    ]
    if missing:
        raise CheckpointError(f"{directory}: missing {len(missing)} expert tensors, e.g. {missing[0]}")
    gate_up = torch.stack([torch.cat((by_index[i]["gate_proj"], by_index[i]["up_proj"])) for i in expected])
    down = torch.stack([by_index[i]["down_proj"] for i in expected])
    return {f"{prefix}.gate_up_proj": gate_up, f"{prefix}.down_proj": down}


def dequantise_fp8(weight: torch.Tensor, scale_inv: torch.Tensor, block: int = FP8_BLOCK) -> torch.Tensor:
    """FP8 weight [O, I] times its per-block scale [ceil(O/block), ceil(I/block)], in float32."""
    rows, cols = weight.shape
    scale = scale_inv.float().repeat_interleave(block, 0)[:rows].repeat_interleave(block, 1)[:, :cols]
    return weight.float() * scale


def _place(
    key: str, tensor: torch.Tensor, dtype: torch.dtype | None, device: str | torch.device
) -> torch.Tensor:
    if key.endswith(_FP32_TENSORS):
        dtype = torch.float32
    elif dtype is None or not tensor.is_floating_point():
        dtype = tensor.dtype
    return tensor.to(device=device, dtype=dtype)


def _check_state(model: MoEForCausalLM, state: dict[str, torch.Tensor], directory: Path) -> None:
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
        state.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"{directory}: missing tensors {shown}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{directory}: tensor {key} has shape {tuple(state[key].shape)}, config.json implies {shape}"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        log.warning(
            "%s: ignoring %d tensors this model does not use, e.g. %s",
            directory,
            len(unexpected),
            unexpected[0],
        )
        for key in unexpected:
            del state[key]


def _materialise_buffers(model: MoEForCausalLM, device: str | torch.device) -> None:
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:
                module.register_buffer(
                    name,
                    torch.zeros(buffer.shape, dtype=buffer.dtype, device=device),
                    persistent=name not in module._non_persistent_buffers_set,
                )
    model.reset_buffers()


def cast_weights(model: MoEForCausalLM, dtype: torch.dtype) -> None:
    """Every weight to `dtype` except the routers, which stay float32 (as DeepSeek ships them)."""
    for name, param in model.named_parameters():
        if not name.endswith(_FP32_TENSORS):
            param.data = param.data.to(dtype)


def save_model(
    model: MoEForCausalLM,
    directory: str | Path,
    *,
    expert_layout: str = "per_expert",
    max_shard_bytes: int = 4 * 2**30,
) -> Path:
    """Write config.json and safetensors that transformers' DeepseekV2/V3ForCausalLM load.

    `expert_layout`: "per_expert" (the published layout, read by every tool) or "stacked".
    Past `max_shard_bytes` the weights are split into shards with an index file.
    """
    if expert_layout not in ("per_expert", "stacked"):
        raise ValueError(f"expert_layout must be 'per_expert' or 'stacked', got {expert_layout!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    if expert_layout == "per_expert":
        state = _unstack_experts(state)
    shards = _split_shards(state, max_shard_bytes)
    if len(shards) == 1:
        save_file(shards[0], str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in shard})
        total += sum(t.numel() * t.element_size() for t in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return directory


def _unstack_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in state.items():
        if key.endswith(".mlp.experts.gate_up_proj"):
            prefix = key.removesuffix(".gate_up_proj")
            for i, fused in enumerate(tensor):
                gate, up = fused.chunk(2, dim=0)
                out[f"{prefix}.{i}.gate_proj.weight"] = gate.contiguous()
                out[f"{prefix}.{i}.up_proj.weight"] = up.contiguous()
        elif key.endswith(".mlp.experts.down_proj"):
            prefix = key.removesuffix(".down_proj")
            for i, down in enumerate(tensor):
                out[f"{prefix}.{i}.down_proj.weight"] = down.contiguous()
        else:
            out[key] = tensor
    return out


def _split_shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards
