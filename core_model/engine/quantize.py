"""Weight-only int8 quantisation, applied to a loaded model from outside (as gpt-fast does).

    quantize_int8(model)      # in place: linears and routed experts hold int8 weights + scales

Each output channel keeps one scale (symmetric, max-abs / 127); activations stay in the model's
dtype. Linears run through torch's int8 weight-pack matmul where it exists and dequantise
otherwise; routed experts dequantise one expert at a time as they run. Left in float: embeddings,
norms, routers (float32 by design) and `kv_b_proj`, whose weight the absorbed MLA decode reads
directly. It is not activation quantisation and not a file format: quantise after loading.

Legend: E experts, O out features, I in features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import MoEForCausalLM
from ..moe import Experts, SortedRows

KEEP_FLOAT = ("kv_b_proj",)


def quantize_weight(weight_OI: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 weights and one scale per output row (along the last-but-one dim)."""
    scale = weight_OI.detach().float().abs().amax(dim=-1).clamp(min=1e-8) / 127
    quantized = torch.round(weight_OI.detach().float() / scale[..., None]).clamp(-127, 127).to(torch.int8)
    return quantized, scale


class Int8Linear(nn.Module):
    weight: torch.Tensor  # int8 [O, I]
    scale: torch.Tensor  # [O]

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight, scale = quantize_weight(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_NI = x.reshape(-1, x.shape[-1])
        scale = self.scale.to(x.dtype)
        try:
            y = torch.ops.aten._weight_int8pack_mm(x_NI.contiguous(), self.weight, scale)
        except (RuntimeError, NotImplementedError):  # no kernel for this device or dtype
            y = F.linear(x_NI, self.weight.to(x.dtype)) * scale
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


class Int8Experts(Experts):
    """Routed experts with int8 weights; each expert is dequantised only when tokens use it."""

    def __init__(self, experts: Experts) -> None:
        nn.Module.__init__(self)
        self.num_experts = experts.num_experts
        self.params_per_expert = experts.params_per_expert
        self.dtype = experts.gate_up_proj.dtype
        self.bfloat16_from_pairs = None  # int8 weights: no bfloat16 copies
        for name in ("gate_up_proj", "down_proj"):
            weight, scale = quantize_weight(getattr(experts, name))
            self.register_buffer(name, weight)
            self.register_buffer(f"{name}_scale", scale.to(self.dtype))

    def dequantized(self, name: str, expert: int) -> torch.Tensor:
        weight = getattr(self, name)[expert].to(self.dtype)
        return weight * getattr(self, f"{name}_scale")[expert][:, None]

    def project(self, rows: SortedRows, x_ND: torch.Tensor, weight: str) -> torch.Tensor:
        out_NO = x_ND.new_empty(x_ND.shape[0], getattr(self, weight).shape[1])
        start = 0
        for expert, count in enumerate(rows.counts):
            if count:
                out_NO[start : start + count] = (
                    x_ND[start : start + count] @ self.dequantized(weight, expert).t()
                )
                start += count
        return out_NO

    def _expert(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        gate, up = F.linear(x, self.dequantized("gate_up_proj", expert)).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.dequantized("down_proj", expert))


@torch.no_grad()
def quantize_int8(model: MoEForCausalLM) -> MoEForCausalLM:
    """Quantises the model in place and returns it."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name not in KEEP_FLOAT:
                setattr(module, child_name, Int8Linear(child))
            elif isinstance(child, Experts) and not isinstance(child, Int8Experts):
                setattr(module, child_name, Int8Experts(child))
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and persistent buffer: what the weights take in memory."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())
