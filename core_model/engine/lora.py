"""Many LoRA adapters over one base model, mixed in one batch.

An adapter is a directory in the PEFT format (`adapter_config.json` + `adapter_model.safetensors`
with `...<module>.lora_A.weight` [r, in] and `...lora_B.weight` [out, r]). `AdapterSet` keeps at
most `max_loras` of them in memory (least recently used out first, reloaded from disk when asked
for again) and wraps each targeted `nn.Linear` of the model in a `MultiLoRALinear`. Before each
step the runner tells the set which adapter each token uses; every wrapped linear then adds,
for each adapter present, `scale * (x_rows @ A^T) @ B^T` to that adapter's rows only: tokens are
grouped by adapter, and the base matmul runs once for all of them (as Punica/S-LoRA do). A step
whose tokens all use one adapter instead multiplies by merged copies of the linears it targets
(`Adapter.merged_weight`), kept while the adapter is resident if they fit MERGE_MAX_BYTES: a small
model's adapters fit, a full DeepSeek checkpoint's do not.

Refused with a clear error: LoRA on `kv_b_proj` (the absorbed decode reads its weight directly)
and on the stacked routed experts.

Legend: N tokens in the step, r rank, I in features, O out features.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..linear import linear
from ..model import MoEForCausalLM

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
GATHER_MAX_TOKENS = 256  # steps up to this many tokens gather per-token LoRA weights
MAX_CACHED_STACKS = 8  # combinations of adapters whose stacked weights are kept
MERGE_MAX_BYTES = 256 * 2**20  # an adapter whose merged linears fit this keeps merged copies of them
_REFUSED = {
    "kv_b_proj": "the absorbed MLA decode uses kv_b_proj's weight directly; merge that LoRA into the base",
    "lm_head": "the engine runs lm_head on each sequence's last token only; merge that LoRA into the base",
}


class AdapterError(ValueError):
    """An adapter this engine cannot serve: missing files, unknown modules, refused targets."""


@dataclass
class Adapter:
    name: str
    path: Path
    content_hash: str  # prefix-cache key: two adapters with the same weights share cached blocks
    scale: float
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module name -> (A [r, I], B [O, r])
    # module name -> W + scale * B @ A, or None where the adapter is not merged into that linear
    merged: dict[str, torch.Tensor | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        size = sum(b.shape[0] * a.shape[1] * a.element_size() for a, b in self.weights.values())
        self.mergeable = size <= MERGE_MAX_BYTES  # merged copies of its linears fit the budget

    def merged_weight(self, module_name: str, base: nn.Module) -> torch.Tensor | None:
        """`base`'s weight with this adapter's LoRA merged in, made on first use and kept while the
        adapter is in memory: a step whose tokens all use this adapter then runs one matmul per
        linear, not three and an add. None where the LoRA does not touch `base`, where `base` is
        not a plain float linear (int8), or where the adapter is not `mergeable`."""
        if module_name not in self.merged:
            pair = self.weights.get(module_name)
            float_linear = isinstance(base, nn.Linear) and base.weight.is_floating_point()
            if pair is None or not self.mergeable or not float_linear:
                self.merged[module_name] = None
            else:
                assert isinstance(base, nn.Linear)
                a_rI, b_Or = pair
                delta_OI = (b_Or.float() @ a_rI.float()) * self.scale
                self.merged[module_name] = (base.weight.float() + delta_OI).to(base.weight.dtype)
        return self.merged[module_name]


def read_adapter(name: str, path: str | Path, *, model: MoEForCausalLM) -> Adapter:
    """Reads and checks a PEFT LoRA directory against the model it will run on."""
    path = Path(path)
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for file in (config_path, weights_path):
        if not file.exists():
            raise AdapterError(f"adapter {name!r}: no {file.name} in {path}")
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"adapter {name!r}: peft_type {config.get('peft_type')!r} is not LORA")
    rank = int(config["r"])
    alpha = float(config.get("lora_alpha", rank))
    scale = alpha / rank**0.5 if config.get("use_rslora") else alpha / rank
    device, dtype = model.embed_tokens.weight.device, model.embed_tokens.weight.dtype
    tensors = load_file(str(weights_path))
    modules = dict(model.named_modules())
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in tensors:
        if not key.endswith(".lora_A.weight"):
            continue
        module_name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        _check_target(name, module_name, modules)
        a = tensors[key]
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise AdapterError(f"adapter {name!r}: {key} has no matching lora_B")
        linear = modules[module_name]
        assert isinstance(linear, nn.Linear | MultiLoRALinear)
        base = linear.base if isinstance(linear, MultiLoRALinear) else linear
        if a.shape != (rank, base.in_features) or b.shape != (base.out_features, rank):
            raise AdapterError(
                f"adapter {name!r}: {module_name} has A {tuple(a.shape)} and B {tuple(b.shape)}; "
                f"the model needs A ({rank}, {base.in_features}) and B ({base.out_features}, {rank})"
            )
        weights[module_name] = (a.to(device, dtype), b.to(device, dtype))
    if not weights:
        raise AdapterError(f"adapter {name!r}: {WEIGHTS_FILE} holds no lora_A/lora_B tensors")
    digest = hashlib.sha256(weights_path.read_bytes() + config_path.read_bytes()).hexdigest()
    return Adapter(name, path, digest, scale, weights)


def save_adapter(
    directory: str | Path,
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    task_type: str | None = "CAUSAL_LM",
    base_model: str | None = None,
) -> Path:
    """Writes module name -> (A [r, I], B [O, r]) as a PEFT LoRA directory that `read_adapter`
    and PEFT's `PeftModel.from_pretrained` read (every LoraConfig field that matters is explicit)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (a, b) in weights.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.detach().contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.detach().contiguous().cpu()
    save_file(tensors, str(directory / WEIGHTS_FILE))
    config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in weights}),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def _check_target(adapter: str, module_name: str, modules: dict[str, nn.Module]) -> None:
    leaf = module_name.rsplit(".", 1)[-1]
    if leaf in _REFUSED:
        raise AdapterError(f"adapter {adapter!r}: LoRA on {module_name} is not supported: {_REFUSED[leaf]}")
    module = modules.get(module_name)
    if module is None:
        raise AdapterError(f"adapter {adapter!r}: the model has no module {module_name}")
    if not isinstance(module, nn.Linear | MultiLoRALinear):
        raise AdapterError(
            f"adapter {adapter!r}: {module_name} is not a linear layer (routed experts are refused)"
        )


class MultiLoRALinear(nn.Module):
    """A base linear plus, per token, the LoRA of that token's adapter (if any)."""

    def __init__(self, base: nn.Linear, adapters: AdapterSet, name: str) -> None:
        super().__init__()
        self.base = base
        self.name = name
        self._adapters = adapters  # not a submodule: the set is shared by every wrapped linear

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adapters = self._adapters
        if adapters.only is not None:  # every token uses one adapter: no gathering, no scattering
            merged = adapters.only.merged_weight(self.name, self.base)
            if merged is not None:
                return linear(x, merged, self.base.bias)
        y = self.base(x)
        if not adapters.groups:
            return y
        if adapters.only is not None:
            pair = adapters.only.weights.get(self.name)
            if pair is None:
                return y
            return y + (F.linear(F.linear(x, pair[0]), pair[1]) * adapters.only.scale).to(y.dtype)
        x_NI, y_NO = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        if adapters.slots_N is not None and adapters.scales_N11 is not None:  # few tokens: BGMV
            stacked = adapters.stacked(self.name)
            if stacked is None:
                return y
            a_NrI, b_NOr = stacked[0][adapters.slots_N], stacked[1][adapters.slots_N]
            h_N1r = torch.bmm(x_NI[:, None, :], a_NrI.transpose(1, 2))
            delta_N1O = torch.bmm(h_N1r, b_NOr.transpose(1, 2)) * adapters.scales_N11
            return (y_NO + delta_N1O[:, 0].to(y_NO.dtype)).view(y.shape)
        for adapter, rows_n in adapters.groups:  # many tokens: one pair of matmuls per adapter
            pair = adapter.weights.get(self.name)
            if pair is None:
                continue
            a_rI, b_Or = pair
            delta = F.linear(F.linear(x_NI.index_select(0, rows_n), a_rI), b_Or) * adapter.scale
            y_NO = y_NO.index_add(0, rows_n, delta.to(y_NO.dtype))
        return y_NO.view(y.shape)


# Per wrapped linear: A [S + 1, r, I] and B [S + 1, O, r] of S adapters, or None when none targets it.
StackedWeights = dict[str, tuple[torch.Tensor, torch.Tensor] | None]


class AdapterSet:
    """The adapters the engine may use, at most `max_loras` in memory, least recently used evicted."""

    def __init__(self, model: MoEForCausalLM, *, max_loras: int) -> None:
        self.model = model
        self.max_loras = max_loras
        self.paths: dict[str, Path] = {}
        self.hashes: dict[str, str] = {}  # content hash of every registered adapter
        self.resident: OrderedDict[str, Adapter] = OrderedDict()
        self.groups: list[tuple[Adapter, torch.Tensor]] = []  # this step's (adapter, token rows)
        self.slots_N: torch.Tensor | None = None  # this step's adapter slot per token, 0: none
        self.scales_N11: torch.Tensor | None = None
        self.only: Adapter | None = None  # this step's adapter when every token uses it
        # Stacked weights per combination of adapters (the step's, in slot order), kept across
        # steps: a batch keeps its mix for many decode steps, and restacking costs a copy per linear.
        self._stacks: OrderedDict[tuple[int, ...], tuple[tuple[Adapter, ...], StackedWeights]] = OrderedDict()
        self._step_stacks: StackedWeights = {}

    def read(self, name: str, path: str | Path) -> Adapter:
        """Reads and checks an adapter without touching the set (no lock needed)."""
        if ":" in name or not name:
            raise AdapterError(f"adapter name {name!r} must be non-empty and contain no ':'")
        if name in self.paths:
            raise AdapterError(f"an adapter named {name!r} is already loaded; unload it first")
        return read_adapter(name, path, model=self.model)

    def add(self, adapter: Adapter) -> None:
        """Makes a read adapter available as `adapter.name`."""
        if adapter.name in self.paths:
            raise AdapterError(f"an adapter named {adapter.name!r} is already loaded; unload it first")
        self.paths[adapter.name] = adapter.path
        self.hashes[adapter.name] = adapter.content_hash
        self._make_resident(adapter, in_use=set())

    def unregister(self, name: str) -> None:
        self.paths.pop(name, None)
        self.hashes.pop(name, None)
        adapter = self.resident.pop(name, None)
        if adapter is not None:
            self._forget_stacks(adapter)

    def content_hash(self, name: str) -> str:
        """The prefix-cache key of a registered adapter (no disk access)."""
        if name not in self.hashes:
            raise AdapterError(f"unknown adapter {name!r}; loaded: {', '.join(self.paths) or 'none'}")
        return self.hashes[name]

    def get(self, name: str, *, in_use: set[str]) -> Adapter:
        """The adapter, read back from disk if it was evicted; `in_use` may not be evicted."""
        if name in self.resident:
            self.resident.move_to_end(name)
            return self.resident[name]
        if name not in self.paths:
            raise AdapterError(f"unknown adapter {name!r}; loaded: {', '.join(self.paths) or 'none'}")
        return self._make_resident(read_adapter(name, self.paths[name], model=self.model), in_use=in_use)

    def _make_resident(self, adapter: Adapter, *, in_use: set[str]) -> Adapter:
        self.resident[adapter.name] = adapter
        self.resident.move_to_end(adapter.name)
        while len(self.resident) > self.max_loras:
            victim = next((n for n in self.resident if n not in in_use and n != adapter.name), None)
            if victim is None:
                raise AdapterError(f"all {self.max_loras} adapter slots are in use; raise max_loras")
            self._forget_stacks(self.resident.pop(victim))
        self._wrap(adapter)
        return adapter

    def _wrap(self, adapter: Adapter) -> None:
        for module_name in adapter.weights:
            parent_name, _, child = module_name.rpartition(".")
            parent = self.model.get_submodule(parent_name)
            current = getattr(parent, child)
            if isinstance(current, nn.Linear):
                setattr(parent, child, MultiLoRALinear(current, self, module_name))

    def set_step(self, token_adapters: list[str | None], device: torch.device) -> None:
        """Which adapter each of the step's tokens uses (None: the base model).

        When one adapter serves every token, each wrapped linear adds its LoRA to all rows at once.
        Otherwise, up to GATHER_MAX_TOKENS tokens, every wrapped linear gathers each token's A and
        B from a stack of this step's adapters (two batched matmuls, whatever the number of
        adapters); beyond, it runs one pair of matmuls per adapter over that adapter's rows.
        """
        rows: dict[str, list[int]] = {}
        for row, name in enumerate(token_adapters):
            if name is not None:
                rows.setdefault(name, []).append(row)
        names = sorted(rows)
        self.groups = [(self.resident[name], torch.tensor(rows[name], device=device)) for name in names]
        self.slots_N = self.scales_N11 = self.only = None
        if len(names) == 1 and len(rows[names[0]]) == len(token_adapters):
            self.only = self.groups[0][0]
        elif self.groups and len(token_adapters) <= GATHER_MAX_TOKENS:
            slot = {name: i + 1 for i, name in enumerate(names)}
            self.slots_N = torch.tensor([slot[n] if n else 0 for n in token_adapters], device=device)
            scales = torch.tensor([0.0] + [adapter.scale for adapter, _ in self.groups], device=device)
            self.scales_N11 = scales[self.slots_N][:, None, None]
            self._step_stacks = self._stacks_for(tuple(adapter for adapter, _ in self.groups))

    def _stacks_for(self, adapters: tuple[Adapter, ...]) -> StackedWeights:
        key = tuple(id(adapter) for adapter in adapters)  # the tuple kept with it pins the ids
        if key in self._stacks:
            self._stacks.move_to_end(key)
        else:
            self._stacks[key] = (adapters, {})
            while len(self._stacks) > MAX_CACHED_STACKS:
                self._stacks.popitem(last=False)
        return self._stacks[key][1]

    def _forget_stacks(self, adapter: Adapter) -> None:
        """Drops the stacks holding an adapter that leaves memory (they would keep it there)."""
        for key in [key for key, (held, _) in self._stacks.items() if any(a is adapter for a in held)]:
            del self._stacks[key]

    def stacked(self, module_name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This step's adapters' A [S + 1, r, I] and B [S + 1, O, r] for one linear (slot 0 and
        adapters without it: zeros; ranks padded with zeros), or None when none targets it."""
        stacks = self._step_stacks
        if module_name not in stacks:
            pairs = [adapter.weights.get(module_name) for adapter, _ in self.groups]
            present = [pair for pair in pairs if pair is not None]
            if not present:
                stacks[module_name] = None
            else:
                rank = max(a.shape[0] for a, _ in present)
                a_ref, b_ref = present[0]
                a_stack = a_ref.new_zeros(len(pairs) + 1, rank, a_ref.shape[1])
                b_stack = b_ref.new_zeros(len(pairs) + 1, b_ref.shape[0], rank)
                for slot, pair in enumerate(pairs, start=1):
                    if pair is not None:
                        a_stack[slot, : pair[0].shape[0]] = pair[0]
                        b_stack[slot, :, : pair[1].shape[1]] = pair[1]
                stacks[module_name] = (a_stack, b_stack)
        return stacks[module_name]
