"""``autopeft space list | show NAME [--model PATH]``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("space", help="inspect search spaces")
    space_sub = parser.add_subparsers(dest="space_command", metavar="ACTION", required=True)
    p_list = space_sub.add_parser("list", help="list the shipped presets")
    p_list.set_defaults(func=_cmd_list)
    p_show = space_sub.add_parser(
        "show", help="parameters, size and trainable-parameter range of a space"
    )
    p_show.add_argument("name", help="preset name or path to a space YAML")
    p_show.add_argument(
        "--model",
        help="model directory or installed model package (sets the layer count "
        "and enables the trainable-parameter range)",
    )
    p_show.add_argument("--layers", type=int, help="layer count, when no --model is given")
    p_show.add_argument(
        "--num-labels", type=int, default=2, help="task head size counted as trainable"
    )
    p_show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_show.set_defaults(func=_cmd_show)


def _cmd_list(args: argparse.Namespace) -> int:
    from autopeft.space import list_presets, load_space

    for name in list_presets():
        space = load_space(name, num_layers=12)
        print(f"{name:<16} {space.description or ''}")
    return 0


def _base_params(model_config) -> int:
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(model_config)
    return sum(p.numel() for p in model.parameters())


def _describe(p) -> str:
    if p.kind in ("float", "int"):
        return f"[{p.low:g}, {p.high:g}]" + (" log" if p.log else "")
    return "{" + ", ".join(json.dumps(c) for c in p.choices) + "}"


def _cmd_show(args: argparse.Namespace) -> int:
    from autopeft.models import load_model_config, resolve_model_path
    from autopeft.space import load_space

    model_config = load_model_config(args.model) if args.model else None
    space = load_space(
        args.name, model_config=model_config, num_layers=None if model_config else args.layers
    )
    info: dict[str, Any] = {
        "name": space.name,
        "description": space.description,
        "num_layers": space.num_layers,
        "dimensions": len(space),
        "encoded_dim": space.dim,
        "size": space.size(),
        "continuous": space.continuous_params,
        "constants": space.constants,
        "params": [
            {
                "name": p.name,
                "kind": p.kind,
                "values": _describe(p),
                "active_if": {k: list(v) for k, v in p.active_if},
            }
            for p in space.params
        ],
    }
    if model_config is not None:
        from autopeft.space.bounds import trainable_range

        lo, hi = trainable_range(space, model_config, args.num_labels)
        base = _base_params(model_config)
        info.update(
            model=str(resolve_model_path(args.model)),
            base_params=base,
            trainable_min=lo,
            trainable_max=hi,
            num_labels=args.num_labels,
        )
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"space      {info['name']}: {info['description'] or ''}")
    if space.num_layers:
        print(f"layers     {space.num_layers}")
    print(f"dimensions {info['dimensions']} ({info['encoded_dim']} encoded)")
    cont = f" x continuous ({', '.join(info['continuous'])})" if info["continuous"] else ""
    print(f"size       {info['size']:,} discrete configurations{cont}")
    if model_config is not None:
        print(
            f"trainable  min {info['trainable_min']:,} ({100 * info['trainable_min'] / base:.3f}%)  "
            f"max {info['trainable_max']:,} ({100 * info['trainable_max'] / base:.3f}%)  "
            f"of {base:,} base parameters, head with {args.num_labels} labels included"
        )
    print("constants  " + ", ".join(f"{k}={v!r}" for k, v in space.constants.items()))
    print(f"\n{'parameter':<22}{'kind':<13}{'values':<44}active if")
    for p in info["params"]:
        cond = ", ".join(f"{k} in {v}" for k, v in p["active_if"].items())
        print(f"{p['name']:<22}{p['kind']:<13}{p['values']:<44}{cond}")
    return 0
