"""ServeSettings: an unsafe bind is refused before anything starts.

.venv/bin/python -m pytest tests/core_model/serve/test_settings.py -q
"""

import pytest

from core_model.serve import ServeSettings, SettingsError, is_loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.7", "example.com"])
def test_a_non_loopback_host_without_a_key_is_refused(host):
    with pytest.raises(SettingsError, match=f"refusing to listen on {host} without an API key"):
        ServeSettings(host=host)


def test_a_non_loopback_host_with_a_key_is_allowed():
    assert ServeSettings(host="0.0.0.0", api_key="k").url == "http://0.0.0.0:8000"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_key(host):
    assert is_loopback(host) and ServeSettings(host=host).api_key is None


def test_the_served_name_defaults_to_the_model_source():
    assert ServeSettings(model="embedded").model_name == "embedded"
    assert ServeSettings(model="/ckpt", served_model_name="coder").model_name == "coder"


def test_an_adapter_name_given_twice_is_refused():
    with pytest.raises(SettingsError, match="given more than once: sql"):
        ServeSettings(adapters=(("sql", "/a"), ("chat", "/b"), ("sql", "/c")))


def test_unknown_quantisation_is_refused():
    with pytest.raises(SettingsError, match="quantize must be 'int8' or unset, got 'int4'"):
        ServeSettings(quantize="int4")


@pytest.mark.parametrize("replicas", [0, -1, "two", 1.5])
def test_engine_replicas_must_be_auto_or_a_positive_count(replicas):
    with pytest.raises(SettingsError, match=f"engine_replicas must be 'auto' or >= 1, got {replicas!r}"):
        ServeSettings(engine_replicas=replicas)
    assert ServeSettings(engine_replicas="auto").engine_replicas == "auto"
