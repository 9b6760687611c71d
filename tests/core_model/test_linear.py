import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core_model import MoEConfig, MoEForCausalLM
from core_model import linear as linear_module
from core_model.linear import FEW_ROWS, LAYOUT_VARIABLE, Linear, few_rows_pay, linear, measure_layouts


@pytest.fixture(params=["plain", "transposed"])
def layout(request, monkeypatch):
    """Each test runs with each few-row layout, whichever this CPU measures faster."""
    monkeypatch.setattr(linear_module, "few_rows_layout", lambda: request.param)
    return request.param


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 40])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_gives_f_linear_for_any_rows_and_leading_dims(rows, bias, layout):
    torch.manual_seed(rows)
    weight, b = torch.randn(48, 32), torch.randn(48) if bias else None
    x = torch.randn(1, rows, 32)
    y = linear(x, weight, b)
    assert y.shape == (1, rows, 48) and y.is_contiguous()
    torch.testing.assert_close(y, F.linear(x, weight, b), rtol=1e-5, atol=1e-5)
    assert y.view(rows, 6, 8).shape == (rows, 6, 8)  # callers view it into heads


def test_the_transposed_layout_is_for_a_few_float32_rows_on_cpu_only(layout):
    x = torch.randn(4, 8)
    assert 4 in FEW_ROWS and few_rows_pay(4, x) == (layout == "transposed")
    assert not few_rows_pay(1, x) and not few_rows_pay(16, x)
    assert not few_rows_pay(4, x.bfloat16())


def test_both_layouts_are_measured_and_timed():
    plain, transposed = measure_layouts(megabytes=1)
    assert 0 < plain < 0.01 and 0 < transposed < 0.01  # seconds per product of 4 rows by 256 x 256


def layout_in_a_new_process(value: str) -> subprocess.CompletedProcess:
    code = "from core_model.linear import few_rows_layout; print(few_rows_layout())"
    env = {"PATH": "", LAYOUT_VARIABLE: value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_environment_variable_decides_the_layout_and_a_bad_value_is_named():
    assert layout_in_a_new_process("transposed").stdout.strip() == "transposed"
    assert layout_in_a_new_process("").stdout.strip() in ("plain", "transposed")  # measured
    bad = layout_in_a_new_process("sideways")
    assert bad.returncode != 0 and "VERTICALS_FEW_ROWS_LAYOUT='sideways'" in bad.stderr


def test_linear_keeps_gradients_of_both_layouts(layout):
    weight = torch.randn(16, 8, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    linear(x, weight).square().sum().backward()
    grads = (x.grad.clone(), weight.grad.clone())
    x.grad = weight.grad = None
    F.linear(x, weight).square().sum().backward()
    torch.testing.assert_close(grads, (x.grad, weight.grad))


def test_the_model_linears_are_nn_linears_with_the_checkpoint_names():
    model = MoEForCausalLM(MoEConfig.preset("tiny"))
    o_proj = model.get_submodule("model.layers.0.self_attn.o_proj")
    assert type(o_proj) is Linear and isinstance(o_proj, nn.Linear)
    assert set(dict(o_proj.named_parameters())) == {"weight"}
    assert type(model.lm_head) is Linear
