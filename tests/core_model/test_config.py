"""MoEConfig: presets, config.json in both spellings, and the memory arithmetic.

.venv/bin/python -m pytest tests/core_model/test_config.py -q
"""

import json

import pytest

from core_model import ConfigError, MoEConfig, load_model
from core_model.config import PRESETS


@pytest.mark.parametrize("name", ["tiny", "embedded"])
def test_counted_parameters_match_the_built_model(name):
    assert load_model(name).num_parameters() == MoEConfig.preset(name).num_parameters()


def test_embedded_and_small_sizes_are_as_documented():
    assert 10e6 <= MoEConfig.preset("embedded").num_parameters() <= 30e6
    assert 180e6 <= MoEConfig.preset("small").num_parameters() <= 250e6


def test_deepseek_v3_shape_has_its_published_size():
    config = MoEConfig.preset("deepseek-v3")
    assert round(config.num_parameters() / 1e9) == 671
    assert round(config.num_parameters(active=True) / 1e9) == 38  # 37 B without embeddings
    assert config.kv_cache_bytes_per_token(dtype_bytes=2) == 576 * 2 * 61


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_json_round_trip(name, tmp_path):
    config = MoEConfig.preset(name)
    config.save(tmp_path)
    assert MoEConfig.from_json_file(tmp_path / "config.json") == config


def test_reads_transformers5_rope_parameters():
    raw = {
        "model_type": "deepseek_v3",
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 5000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 64,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
    }
    config = MoEConfig.from_hf_dict(raw)
    assert config.rope_theta == 5000.0
    assert config.rope_scaling["type"] == "yarn" and config.rope_scaling["factor"] == 4.0


def test_reads_legacy_rope_scaling_and_null_q_lora_rank():
    raw = {
        "model_type": "deepseek_v2",
        "q_lora_rank": None,
        "rope_theta": 10000,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096},
        "n_group": None,
        "topk_group": None,
    }
    config = MoEConfig.from_hf_dict(raw)
    assert config.q_lora_rank is None
    assert config.rope_scaling["factor"] == 40
    assert (config.scoring_func, config.topk_method, config.n_group) == ("softmax", "greedy", 1)


def test_family_defaults_fill_what_transformers5_leaves_out():
    config = MoEConfig.from_hf_dict({"model_type": "deepseek_v3"})
    assert (config.scoring_func, config.topk_method, config.norm_topk_prob) == ("sigmoid", "noaux_tc", True)


def test_unknown_keys_survive_a_round_trip():
    raw = {"model_type": "deepseek_v3", "num_nextn_predict_layers": 1}
    assert MoEConfig.from_hf_dict(raw).to_hf_dict()["num_nextn_predict_layers"] == 1


def test_unsupported_model_type_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mixtral"}))
    with pytest.raises(ConfigError, match=f"{path}: unsupported model_type 'mixtral'"):
        MoEConfig.from_json_file(path)


def test_broken_json_names_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "deepseek_v3",\n  oops\n}')
    with pytest.raises(ConfigError, match="config.json: not valid JSON \\(line 3\\)"):
        MoEConfig.from_json_file(path)


def test_impossible_routing_is_refused():
    with pytest.raises(ConfigError, match="n_routed_experts \\(10\\) is not divisible by n_group \\(4\\)"):
        MoEConfig.preset("tiny").replace(n_routed_experts=10, n_group=4)
    with pytest.raises(ConfigError, match="num_experts_per_tok \\(6\\) exceeds the 4 experts"):
        MoEConfig.preset("tiny").replace(num_experts_per_tok=6)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="presets: tiny, embedded, small"):
        MoEConfig.preset("huge")
