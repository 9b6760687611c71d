"""Prometheus metrics of the server, under vLLM's names wherever they mean the same thing.

Dashboards and alerts written for vLLM (`vllm:time_to_first_token_seconds`, `vllm:num_requests_
waiting`, ...) work unchanged; every series carries vLLM's `model_name` label, and request
outcomes its `finished_reason` label. P50/P99 come from the histograms, e.g.
`histogram_quantile(0.99, rate(vllm:time_to_first_token_seconds_bucket[5m]))`.

LoRA adapters: `vllm:lora_requests_info` with vLLM's labels only (`running_lora_adapters`,
`waiting_lora_adapters`: names joined by commas; `max_lora`) and the time as its value, which
LoRA-aware routers (the Gateway API inference extension) read; and a plain counter of requests per
adapter, `verticals:adapter_requests_total{adapter="..."}`.

Each `ServeMetrics` owns its `CollectorRegistry`, so several apps (or tests) in one process don't
clash over the global one. Queue gauges and cache usage are read from the engine at scrape time.
It does not serve HTTP (`api.py` does) and does not time anything the engine does internally.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterable, Iterator
from contextlib import aclosing

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..engine import Engine, RequestOutput
from ..engine.scheduler import Sequence

CONTENT_TYPE = CONTENT_TYPE_LATEST
# vLLM's buckets, in seconds.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)


class ServeMetrics:
    def __init__(self, engine: Engine, *, model_name: str) -> None:
        self.registry = registry = CollectorRegistry()
        labels = ["model_name"]
        self.time_to_first_token = Histogram(
            "vllm:time_to_first_token_seconds",
            "Seconds from a request's arrival to its first generated token.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=registry,
        ).labels(model_name)
        self.time_per_output_token = Histogram(
            "vllm:time_per_output_token_seconds",
            "Seconds between consecutive generated tokens of a request.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=registry,
        ).labels(model_name)
        self.e2e_request_latency = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Seconds from a request's arrival to its last token.",
            labels,
            buckets=E2E_BUCKETS,
            registry=registry,
        ).labels(model_name)
        gauges = {
            "vllm:num_requests_running": (
                "Requests in the running batch.",
                lambda: engine.num_running,
            ),
            "vllm:num_requests_waiting": (
                "Requests waiting for the batch.",
                lambda: engine.num_waiting,
            ),
            "vllm:kv_cache_usage_perc": (
                "Fraction of KV cache blocks in use, 0 to 1.",
                lambda: engine.pool.usage,
            ),
        }
        for name, (doc, read) in gauges.items():
            Gauge(name, doc, labels, registry=registry).labels(model_name).set_function(read)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prompt tokens of finished requests.", labels, registry=registry
        ).labels(model_name)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generated tokens of finished requests.", labels, registry=registry
        ).labels(model_name)
        self._success = Counter(
            "vllm:request_success",
            "Requests that finished, by why they finished (stop, length).",
            [*labels, "finished_reason"],
            registry=registry,
        )
        self._adapter_requests = Counter(
            "verticals:adapter_requests",
            "Requests accepted, by the LoRA adapter they use.",
            [*labels, "adapter"],
            registry=registry,
        )
        registry.register(LoraRequestsInfo(engine))
        self._model_name = model_name

    def count_adapter_request(self, adapter: str) -> None:
        self._adapter_requests.labels(self._model_name, adapter).inc()

    def render(self) -> bytes:
        """The exposition text of this registry."""
        return generate_latest(self.registry)

    async def track(
        self, outputs: AsyncGenerator[RequestOutput, None], *, arrival: float
    ) -> AsyncGenerator[RequestOutput, None]:
        """Passes one request's outputs through, timing its tokens; `arrival` is a `perf_counter()`.

        A request that stops early (client gone, error) counts in no counter.
        """
        last_token_at: float | None = None
        async with aclosing(outputs):
            async for output in outputs:
                now = time.perf_counter()
                if output.delta_token_ids:
                    if last_token_at is None:
                        self.time_to_first_token.observe(now - arrival)
                    else:
                        self.time_per_output_token.observe(now - last_token_at)
                    last_token_at = now
                if output.finished:
                    self.e2e_request_latency.observe(now - arrival)
                    self.prompt_tokens.inc(len(output.prompt_token_ids))
                    self.generation_tokens.inc(len(output.token_ids))
                    self._success.labels(self._model_name, output.finish_reason or "unknown").inc()
                yield output


class LoraRequestsInfo(Collector):
    """vLLM's `vllm:lora_requests_info`, read from the engine's scheduler at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        scheduler = self.engine.scheduler
        # list() copies in one step under the GIL while the engine's thread changes the queues.
        running, waiting = list(scheduler.running), list(scheduler.waiting)
        family = GaugeMetricFamily(
            "vllm:lora_requests_info",
            "Running stats on lora requests.",
            labels=["running_lora_adapters", "waiting_lora_adapters", "max_lora"],
        )
        labels = [_adapters(running), _adapters(waiting), str(self.engine.config.max_loras)]
        family.add_metric(labels, time.time())
        yield family


def _adapters(sequences: Iterable[Sequence]) -> str:
    names = (sequence.state.get("adapter") for sequence in sequences)
    return ",".join(dict.fromkeys(name for name in names if name))
