"""Search spaces: parsing, validation errors naming the field, sampling, encoding, size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from autopeft import InvalidConfig, SearchSpace, list_presets, load_space

SMALL = {
    "params": {
        "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "epochs": {"type": "int", "low": 1, "high": 4},
        "sched": {"type": "categorical", "choices": ["linear", "cosine"]},
        "warmup": {"type": "float", "low": 0.0, "high": 0.2, "active_if": {"sched": "linear"}},
        "batch_size": 32,
    },
    "peft": {
        "layers": {"search": True},
        "lora": {"targets": "q,v", "rank": {"choices": [0, 4, 8], "per_layer": True}},
        "ia3": {"targets": {"choices": ["", "k,v,ffn_out"]}},
    },
}


def small(num_layers: int = 3) -> SearchSpace:
    return SearchSpace.from_dict(SMALL, num_layers=num_layers)


# ---------------------------------------------------------------------------- errors
BAD_SPACES = [
    # (description, space dict, field named in the error)
    ("unknown top-level key", {"parms": {}}, "parms"),
    ("unknown PEFT method", {"peft": {"dora": {"rank": 4}}}, "peft.dora"),
    ("unknown field of a method", {"peft": {"lora": {"rnk": 4}}}, "peft.lora.rnk"),
    ("unknown spec key", {"params": {"lr": {"low": 0.1, "high": 1.0, "lg": True}}}, "params.lr.lg"),
    ("unknown type", {"params": {"lr": {"type": "double", "low": 0, "high": 1}}}, "params.lr.type"),
    ("low above high", {"params": {"lr": {"type": "float", "low": 2.0, "high": 1.0}}}, "params.lr"),
    (
        "log with low <= 0",
        {"params": {"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}},
        "params.lr",
    ),
    (
        "log wrong type",
        {"params": {"lr": {"low": 0.1, "high": 1.0, "log": "yes"}}},
        "params.lr.log",
    ),
    ("no bounds nor choices", {"params": {"lr": {"type": "float"}}}, "params.lr"),
    ("empty choices", {"params": {"opt": {"choices": []}}}, "params.opt.choices"),
    ("mixed choice types", {"params": {"opt": {"choices": ["a", 1]}}}, "params.opt.choices"),
    ("negative rank", {"peft": {"lora": {"rank": {"choices": [0, -4]}}}}, "peft.lora.rank"),
    ("rank wrong type", {"peft": {"lora": {"rank": "eight"}}}, "peft.lora.rank"),
    ("fractional size", {"peft": {"serial": {"size": 2.5}}}, "peft.serial.size"),
    ("unknown lora target", {"peft": {"lora": {"targets": "q,x"}}}, "peft.lora.targets"),
    ("empty lora targets", {"peft": {"lora": {"targets": ""}}}, "peft.lora.targets"),
    ("unknown ia3 target", {"peft": {"ia3": {"targets": "q"}}}, "peft.ia3.targets"),
    ("unknown activation", {"peft": {"serial": {"activation": "swish"}}}, "peft.serial.activation"),
    ("dropout out of range", {"peft": {"lora": {"dropout": 1.5}}}, "peft.lora.dropout"),
    ("scaling not positive", {"peft": {"parallel": {"scaling": 0}}}, "peft.parallel.scaling"),
    (
        "per-layer non-size",
        {"peft": {"lora": {"targets": {"choices": ["q"], "per_layer": True}}}},
        "peft.lora.targets.per_layer",
    ),
    (
        "per-layer without model",
        {"peft": {"lora": {"rank": {"choices": [0, 8], "per_layer": True}}}},
        "peft.lora.rank",
    ),
    (
        "alpha and alpha_ratio",
        {"peft": {"lora": {"alpha": 16, "alpha_ratio": 2}}},
        "peft.lora.alpha",
    ),
    ("layers wrong type", {"peft": {"layers": {"search": "on"}}}, "peft.layers.search"),
    (
        "active_if unknown parent",
        {"params": {"w": {"low": 0.0, "high": 1.0, "active_if": {"nope": 1}}}},
        "w",
    ),
    (
        "active_if bad value",
        {
            "params": {
                "s": {"choices": ["a", "b"]},
                "w": {"low": 0.0, "high": 1.0, "active_if": {"s": "c"}},
            }
        },
        "s",
    ),
    ("params not a mapping", {"params": [1, 2]}, "params"),
]


@pytest.mark.parametrize("desc,space,field", BAD_SPACES, ids=[b[0] for b in BAD_SPACES])
def test_bad_space_names_the_field(desc, space, field):
    with pytest.raises(InvalidConfig) as info:
        SearchSpace.from_dict(space)
    assert info.value.field == field, str(info.value)
    assert field in str(info.value)


BAD_CONFIGS = [
    ("unknown key", {"lr2": 0.1}, "lr2"),
    ("malformed PEFT key", {"lora.rnak.0": 4}, "lora.rnak.0"),
    ("valid PEFT key outside the space", {"serial.size": 8}, "serial.size"),
    ("out of range float", {"lr": 1.0}, "lr"),
    ("float given a string", {"lr": "0.001"}, "lr"),
    ("int given a fraction", {"epochs": 2.5}, "epochs"),
    ("int given a bool", {"epochs": True}, "epochs"),
    ("int out of range", {"epochs": 9}, "epochs"),
    ("categorical not a choice", {"sched": "step"}, "sched"),
    ("rank not a choice", {"lora.rank.1": 16}, "lora.rank.1"),
    ("mask given an int", {"layers.0": 1}, "layers.0"),
    ("constant changed", {"batch_size": 64}, "batch_size"),
    ("constant PEFT changed", {"lora.targets": "q,k"}, "lora.targets"),
]


@pytest.mark.parametrize("desc,change,field", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_names_the_key(desc, change, field):
    space = small()
    config = space.default_config()
    config.update(change)
    with pytest.raises(InvalidConfig) as info:
        space.validate(config)
    assert info.value.field == field, str(info.value)


def test_missing_active_parameter_is_named():
    space = small()
    config = space.default_config()
    del config["epochs"]
    with pytest.raises(InvalidConfig, match="epochs"):
        space.validate(config)


def test_validate_normalises_and_drops_inactive():
    space = small()
    config = space.default_config()
    config.update(
        {"sched": "cosine", "warmup": 0.1, "epochs": 2.0, "layers.1": False, "lora.rank.1": 8}
    )
    out = space.validate(config)
    assert "warmup" not in out and "lora.rank.1" not in out  # inactive: dropped
    assert out["epochs"] == 2 and isinstance(out["epochs"], int)
    assert out["batch_size"] == 32 and out["lora.targets"] == "q,v"  # constants filled in
    assert space.validate(out) == out  # idempotent


# ---------------------------------------------------------------------------- yaml / presets
@pytest.mark.parametrize(
    "text,needle",
    [
        ("params: {lr: [1, 2", "line"),
        ("params:\n  lr: {type: float, low: 1, high: 0}\n", "params.lr"),
        ("peft:\n  lora:\n    rank: {choices: [0, 4], per_layer: true}\n", "model config"),
    ],
)
def test_yaml_errors(tmp_path: Path, text, needle):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(InvalidConfig, match=needle):
        load_space(path)


def test_unknown_preset_lists_presets():
    with pytest.raises(InvalidConfig, match="lora_per_layer"):
        load_space("no_such_space")


def test_presets_shipped_and_described():
    assert {"autopeft_sapa", "lora_per_layer", "mixed"} <= set(list_presets())
    for name in list_presets():
        space = load_space(name, num_layers=12)
        assert space.name == name and space.description


def test_autopeft_sapa_size_matches_paper():
    # REFERENCES.md: 15 dimensions for 12 layers, 27 for 24, about 5.45 million configs for BERT-base.
    s12, s24 = (
        load_space("autopeft_sapa", num_layers=12),
        load_space("autopeft_sapa", num_layers=24),
    )
    assert (len(s12), len(s24)) == (15, 27)
    assert s12.size() == 11**3 * 2**12 == 5_451_776


def test_per_layer_expansion_from_transformers_config():
    from transformers import BertConfig, GPT2Config

    assert len(load_space("lora_per_layer", model_config=BertConfig(num_hidden_layers=5))) == 5 + 1
    assert len(load_space("lora_per_layer", model_config=GPT2Config(n_layer=7))) == 7 + 1
    with pytest.raises(InvalidConfig):
        load_space("lora_per_layer", model_config={"hidden_size": 8})


# ---------------------------------------------------------------------------- size
def test_size_counts_conditions_exactly():
    # epochs 4 x (linear with warmup | cosine) = 4 x 2 sched, warmup continuous;
    # each layer: off (1) or on with 3 ranks -> 4 per layer; ia3 2 choices.
    space = small(num_layers=3)
    assert space.size() == 4 * 2 * 4**3 * 2
    assert space.continuous_params == ["lr", "warmup"]
    # brute force over the discrete parameters confirms the count
    discrete = SearchSpace.from_dict({"peft": SMALL["peft"]}, num_layers=3)
    seen = {tuple(sorted(c.items())) for c in discrete.sample(20000, seed=1)}
    assert len(seen) == discrete.size() == 4**3 * 2


def test_mixed_size_in_header_is_right():
    header = Path(__file__).parents[2].joinpath("search_spaces", "mixed.yaml").read_text()
    assert f"{load_space('mixed', num_layers=12).size():,}" in header


# ---------------------------------------------------------------------------- sampling & encoding
def test_sample_is_reproducible_and_valid():
    space = load_space("mixed", num_layers=6)
    a, b = space.sample(20, seed=3), space.sample(20, seed=3)
    assert a == b and a != space.sample(20, seed=4)
    for config in a:
        assert space.validate(config) == config


def test_log_sampling_is_log_uniform():
    space = SearchSpace.from_dict({"params": {"lr": {"low": 1e-5, "high": 1e-1, "log": True}}})
    lrs = np.array([c["lr"] for c in space.sample(4000, seed=0)])
    below = np.mean(lrs < 1e-3)  # half of the log-range
    assert 0.45 < below < 0.55


@pytest.mark.parametrize("preset", ["autopeft_sapa", "lora_per_layer", "mixed"])
def test_encode_decode_roundtrip(preset):
    space = load_space(preset, num_layers=4)
    for config in space.sample(50, seed=0):
        x = space.encode(config)
        assert x.shape == (space.dim,) and np.all((x >= 0) & (x <= 1))
        decoded = space.decode(x)
        for key, value in config.items():
            if isinstance(value, float):
                assert math.isclose(decoded[key], value, rel_tol=1e-9)
            else:
                assert decoded[key] == value


def test_decode_any_vector_gives_valid_config():
    space = load_space("mixed", num_layers=4)
    rng = np.random.default_rng(0)
    for _ in range(200):
        space.validate(space.decode(rng.normal(0.5, 1.0, size=space.dim)))


def test_features_describe_the_encoding():
    space = load_space("mixed", num_layers=2)
    kinds = {name: kind for name, kind, _ in space.features}
    assert kinds["lr"] == "float" and kinds["epochs"] == "int"
    assert kinds["lora.rank.0"] == "ordinal" and kinds["layers.0"] == "ordinal"
    assert kinds["scheduler"] == "categorical" and kinds["lora.targets"] == "categorical"
    widths = {name: sl.stop - sl.start for name, _, sl in space.features}
    assert widths["scheduler"] == 3 and widths["lr"] == 1
    assert sum(widths.values()) == space.dim
    assert space.per_layer_groups() == {
        "layers": ["layers.0", "layers.1"],
        "lora.rank": ["lora.rank.0", "lora.rank.1"],
    }


def test_one_hot_and_ordinal_encoding_values():
    space = small(num_layers=1)
    config = space.default_config()
    config.update({"sched": "cosine", "lora.rank.0": 8, "lr": 1e-5})
    x = space.encode(config)
    feats = {name: sl for name, _, sl in space.features}
    assert list(x[feats["sched"]]) == [0.0, 1.0]
    assert x[feats["lora.rank.0"]][0] == 1.0  # last of 3 ordinal choices
    assert x[feats["lr"]][0] == 0.0


def test_import_autopeft_is_light():
    import subprocess
    import sys

    code = (
        "import sys, autopeft; autopeft.load_space('mixed', num_layers=2); "
        "heavy = [m for m in ('torch', 'transformers', 'fastapi', 'sqlalchemy', 'ray', 'botorch') "
        "if m in sys.modules]; print(heavy); assert not heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
