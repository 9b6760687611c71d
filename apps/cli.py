"""The `verticals` command: the one entry point of the suite.

    verticals info                       # the embedded default model
    verticals info --model tiny          # any preset
    verticals info --model CHECKPOINT    # a Hugging Face DeepSeek-V2/V3 directory (reads config.json only)
    verticals serve                      # the OpenAI-compatible API on http://127.0.0.1:8000/v1
    verticals serve --model CHECKPOINT --host 0.0.0.0 --api-key KEY   # (or VERTICALS_API_KEY=KEY)
    verticals serve --adapter sql=/adapters/sql    # a PEFT LoRA directory, used as model "embedded:sql"

It is the composition root: the only code that knows every app. It parses arguments and prints;
the work happens in `core_model` and the apps.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core_model import ConfigError, MoEConfig
from core_model.checkpoint import ASSETS
from core_model.config import PRESETS

DEFAULT_MODEL = "embedded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verticals", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print a model's architecture and memory arithmetic")
    info.add_argument("--model", default=DEFAULT_MODEL, help="preset name or checkpoint directory")
    serve = commands.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API")
    serve.add_argument("--model", default=DEFAULT_MODEL, help="preset name or checkpoint directory")
    serve.add_argument("--served-model-name", help="the model id clients send (default: --model)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        default=os.environ.get("VERTICALS_API_KEY"),
        help="require `Authorization: Bearer KEY` (default: $VERTICALS_API_KEY); needed off loopback",
    )
    serve.add_argument("--max-cache-tokens", type=int, help="KV cache capacity in tokens")
    serve.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429")
    serve.add_argument(
        "--quantize", choices=["int8"], help="weight-only int8 for linears and experts (about 1/4 the memory)"
    )
    serve.add_argument(
        "--adapter",
        action="append",
        default=[],
        type=_adapter,
        metavar="NAME=DIR",
        help="load a PEFT LoRA directory, used as model MODEL:NAME (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print(describe(args.model))
        elif args.command == "serve":
            run_server(args)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"verticals: error: {error}", file=sys.stderr)
        return 2
    return 0


def run_server(args: argparse.Namespace) -> None:
    """Settings first (an unsafe bind fails before anything loads), then the app, then uvicorn."""
    # Imported here: `info` must work without the serve extra (fastapi, uvicorn).
    import uvicorn

    from apps.suite import create_app
    from core_model.serve import ServeSettings

    settings = ServeSettings(
        model=args.model,
        served_model_name=args.served_model_name,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_queue=args.max_queue,
        max_cache_tokens=args.max_cache_tokens,
        adapters=tuple(args.adapter),
        quantize=args.quantize,
    )
    app = create_app(settings)
    auth = "Bearer key required" if settings.api_key else "no API key"
    print(f"verticals: serving {settings.model_name!r} at {settings.url}/v1 ({auth})")
    print(f"verticals: health at {settings.url}/health, metrics at {settings.url}/metrics")
    sys.stdout.flush()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


def _adapter(value: str) -> tuple[str, str]:
    name, equals, path = value.partition("=")
    if not (name and equals and path):
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {value!r}")
    return name, path


def describe(source: str) -> str:
    """A model's summary from its config alone: nothing is loaded, so any size works."""
    config, weights = _config_and_weights(source)
    experts = (
        f"{config.n_routed_experts} routed (top {config.num_experts_per_tok}, "
        f"{config.scoring_func}, {config.topk_method}) + {config.n_shared_experts or 0} shared"
        if config.n_routed_experts
        else "none (dense)"
    )
    moe_layers = sum(config.is_moe_layer(i) for i in range(config.num_hidden_layers))
    rows = [
        ("model", source),
        ("weights", weights),
        ("architecture", f"{config.model_type}, {config.num_hidden_layers} layers ({moe_layers} MoE)"),
        (
            "hidden size",
            f"{config.hidden_size}, {config.num_attention_heads} heads, vocab {config.vocab_size}",
        ),
        (
            "attention",
            f"MLA: q_lora_rank {config.q_lora_rank}, kv_lora_rank {config.kv_lora_rank}, "
            f"rope dim {config.qk_rope_head_dim}, rope scaling {_rope(config)}",
        ),
        ("experts", experts),
        (
            "parameters",
            f"{_count(config.num_parameters())} total, "
            f"{_count(config.num_parameters(active=True))} active per token",
        ),
        ("weights in bf16", _bytes(config.num_parameters() * 2)),
        ("latent KV cache", f"{_bytes(config.kv_cache_bytes_per_token(dtype_bytes=2))} per token in bf16"),
        ("context", f"{config.max_position_embeddings} positions"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _config_and_weights(source: str) -> tuple[MoEConfig, str]:
    path = Path(source)
    if path.is_dir():
        return MoEConfig.from_json_file(path / "config.json"), f"checkpoint at {path}"
    if source not in PRESETS:
        raise FileNotFoundError(
            f"{source!r} is neither a checkpoint directory nor a preset ({', '.join(PRESETS)})"
        )
    shipped = ASSETS / source
    if (shipped / "config.json").exists():
        return MoEConfig.from_json_file(shipped / "config.json"), f"shipped in core_model/assets/{source}"
    if source.startswith("deepseek-"):
        return MoEConfig.preset(source), "shape only: pass --model CHECKPOINT_DIR to use real weights"
    return MoEConfig.preset(source), "none shipped: random initialisation with a fixed seed"


def _rope(config: MoEConfig) -> str:
    if not config.rope_scaling:
        return "none"
    return f"{config.rope_scaling['type']} x{config.rope_scaling.get('factor')}"


def _count(n: int) -> str:
    return f"{n / 1e9:.1f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


if __name__ == "__main__":
    sys.exit(main())
