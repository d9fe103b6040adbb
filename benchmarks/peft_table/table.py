"""The recorded table of a task, loaded for replay (``build.py`` writes it, ``table_search.py`` and
``replay.py`` read it).

``Table.load(task)`` gives, per candidate: its config, trainable parameters, and for each recorded
training seed the validation correctness bits and the test accuracy at every report. What the
replay needs from it:

* ``observed(cid, seed, report, val_index)``: the validation accuracy a live study would have seen
  for that run at that report on the validation examples ``val_index`` (a bootstrap of the
  recorded split: each repetition of a replay sees a validation set of the same size drawn anew,
  the noise of a finite split);
* ``truth(cid, report)``: the seed-mean test accuracy at that report (what a selected point is
  really worth);
* ``nearest(config, exclude)``: the search candidate closest to a config in the space's
  unit-cube encoding, among those not in ``exclude`` (the replay excludes the candidates a study
  already ran, so a step next to a good point runs its nearest unrun neighbour instead of the
  same candidate again: a finite table's stand-in for the configs around it; tabular benchmarks
  such as Syne Tune's blackbox repository answer configs off the table by nearest neighbour too).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from real_search import _front_mask, hypervolume  # noqa: E402, F401  (the same front maths)

DATA = HERE / "data"
#: LoRA baselines that are also points of ``lora_per_layer`` (the same rank in every layer, lr
#: 2e-3): searched configs may land on them
LORA_BASELINES = {"lora_r4": 4, "lora_r8": 8, "lora_r16": 16}
#: how many seconds a report of a run takes in the simulated clock (all LoRA runs alike)
REPORT_TIME = 1.0


def adapter_free(config: dict[str, Any]) -> bool:
    """A config of ``lora_per_layer`` with LoRA in no layer: it trains the head alone."""
    return not any(v for k, v in config.items() if k.startswith("lora.rank."))


def _unpack(text: str, n: int) -> np.ndarray:
    import base64

    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw)[:n].astype(bool)


@dataclass
class Candidate:
    id: str
    kind: str  # "sobol" | "baseline" | "zero" (the adapter-free corner)
    config: dict[str, Any]
    params: int
    seeds: list[int]
    epochs: np.ndarray  # (R,) epoch at each report
    val_bits: np.ndarray  # (S, R, n_val) bool
    val_acc: np.ndarray  # (S, R) on the whole recorded split
    test_acc: np.ndarray  # (S, R)
    wall_s: float = 0.0

    @property
    def reports(self) -> int:
        return len(self.epochs)

    def truth(self, report: int) -> float:
        """Seed-mean test accuracy after report ``report`` (1-based; clipped to the last)."""
        r = min(max(report, 1), self.reports) - 1
        return float(self.test_acc[:, r].mean())


@dataclass
class Table:
    task: str
    workload: dict[str, Any]
    n_val: int
    n_test: int
    majority_test: float
    candidates: dict[str, Candidate]
    search_ids: list[str] = field(default_factory=list)
    _X: np.ndarray | None = None
    space: Any = None

    @classmethod
    def load(cls, task: str, data: Path = DATA, min_seeds: int = 1) -> Table:
        meta = json.loads((data / f"{task}.meta.json").read_text())
        n_val, n_test = len(meta["val_index"]), len(meta["test_index"])
        labels = np.asarray(meta["test_labels"])
        majority = float(np.bincount(labels).max() / len(labels))
        rows: dict[str, dict[int, dict]] = {}
        for line in (data / f"{task}.runs.jsonl").read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["candidate"], {})[int(row["seed"])] = row
        cands = {}
        for c in meta["candidates"]:
            runs = rows.get(c["id"], {})
            if len(runs) < min_seeds:
                continue
            seeds = sorted(runs)
            first = runs[seeds[0]]
            n_rep = min(len(runs[s]["reports"]) for s in seeds)
            cands[c["id"]] = Candidate(
                id=c["id"],
                kind=c["kind"],
                config=c["config"],
                params=int(first["trainable_params"]),
                seeds=seeds,
                epochs=np.array([r["epoch"] for r in first["reports"][:n_rep]], float),
                val_bits=np.stack(
                    [
                        np.stack(
                            [_unpack(r["val_bits"], n_val) for r in runs[s]["reports"][:n_rep]]
                        )
                        for s in seeds
                    ]
                ),
                val_acc=np.array(
                    [[r["accuracy"] for r in runs[s]["reports"][:n_rep]] for s in seeds]
                ),
                test_acc=np.array(
                    [[r["test_accuracy"] for r in runs[s]["reports"][:n_rep]] for s in seeds]
                ),
                wall_s=float(np.mean([runs[s]["wall_s"] for s in seeds])),
            )
        table = cls(task, meta["workload"], n_val, n_test, majority, cands)
        table.search_ids = [
            cid for cid, c in cands.items() if c.kind in ("sobol", "zero") or cid in LORA_BASELINES
        ]
        return table

    @property
    def fingerprint(self) -> str:
        """What a replay's result depends on in the table: its candidates and their seeds (a
        cached replay of another table is stale)."""
        import hashlib

        text = json.dumps(sorted((c.id, c.seeds) for c in self.candidates.values()))
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    # -- the search space and the projection of configs onto candidates ------------------------
    def search_config(self, cid: str) -> dict[str, Any]:
        """A candidate as a config of the task's space (a LoRA baseline spelled per layer)."""
        c = self.candidates[cid]
        if c.kind in ("sobol", "zero"):
            return dict(c.config)
        space = self.load_space()
        layers = sum(1 for p in space.params if p.name.startswith("lora.rank."))
        config = {k: v for k, v in space.default_config().items()}
        config.update({f"lora.rank.{i}": LORA_BASELINES[cid] for i in range(layers)})
        config["lr"] = c.config["lr"]
        return space.validate(config)

    def load_space(self):
        """``lora_per_layer`` for the task's model."""
        if self.space is None:
            from autopeft import load_space
            from autopeft.models import load_model_config

            self.space = load_space(
                "lora_per_layer", model_config=load_model_config(self.workload["model"])
            )
        return self.space

    def nearest(self, config: dict[str, Any], exclude: set[str] | frozenset = frozenset()) -> str:
        """The search candidate nearest to ``config`` (Euclidean, in the space's unit cube), not
        one of ``exclude`` while any other is left."""
        space = self.load_space()
        if self._X is None:
            self._X = np.stack([space.encode(self.search_config(c)) for c in self.search_ids])
        config = space.validate(config)
        x = space.encode(config)
        d = ((self._X - x) ** 2).sum(axis=1)
        # the adapter-free corner (the head alone) answers only for itself, when the table has it
        zero = np.array([self.candidates[c].kind == "zero" for c in self.search_ids])
        if zero.any():
            d = np.where(zero == adapter_free(config), d, np.inf)
        allowed = np.array([c not in exclude for c in self.search_ids]) & np.isfinite(d)
        if allowed.any():
            d = np.where(allowed, d, np.inf)
        return self.search_ids[int(np.argmin(d))]

    # -- values -------------------------------------------------------------------------------
    def observed(self, cid: str, seed_slot: int, report: int, val_index: np.ndarray) -> float:
        """Validation accuracy of run ``seed_slot`` (an index into the candidate's seeds, taken
        modulo their number) at ``report`` (1-based) on the examples ``val_index``."""
        c = self.candidates[cid]
        bits = c.val_bits[seed_slot % len(c.seeds), min(report, c.reports) - 1]
        return float(bits[val_index].mean())

    def truth_front(self, ids_reports: list[tuple[str, int]]) -> list[tuple[float, float]]:
        """(truth accuracy, params) of ``(candidate, report)`` points."""
        return [
            (self.candidates[c].truth(r), float(self.candidates[c].params)) for c, r in ids_reports
        ]

    def best_points(self) -> list[tuple[float, float]]:
        """Every candidate at its last report, truth values: the best front the table allows."""
        return [(c.truth(c.reports), float(c.params)) for c in self.candidates.values()]

    def reference(self, base_params: int, pct: float = 2.0) -> tuple[float, float]:
        """Hypervolume reference point: the test split's majority-class accuracy and ``pct``% of
        the model's parameters (``benchmarks/real_search.py``'s rule)."""
        return self.majority_test, base_params * pct / 100.0


def describe(task: str) -> dict[str, Any]:
    """What a table holds and how noisy it is: candidates and runs, each candidate's true
    (seed-mean test) accuracy and parameters, the true front, the seed spread of test accuracy
    where a candidate has several seeds, and the standard error of one validation number."""
    from replay import _base_params, best_hv

    t = Table.load(task)
    rows = sorted(t.candidates.values(), key=lambda c: c.params)
    truths = [(c.truth(c.reports), float(c.params)) for c in rows]
    front = _front_mask(truths)
    spread = [float(c.test_acc[:, -1].std(ddof=1)) for c in rows if len(c.seeds) > 1]
    val = [float(c.val_acc[0, -1]) for c in rows]
    p = float(np.median(val))
    return {
        "task": task,
        "candidates": len(rows),
        "runs": sum(len(c.seeds) for c in rows),
        "multi_seed": len(spread),
        "n_val": t.n_val,
        "n_test": t.n_test,
        "majority_test": t.majority_test,
        "best_hv": best_hv(t),
        "reference": t.reference(_base_params(t)),
        "seed_sd_test_median": float(np.median(spread)) if spread else None,
        "val_se": math.sqrt(p * (1 - p) / t.n_val),
        "rows": [
            {
                "id": c.id,
                "params": c.params,
                "seeds": len(c.seeds),
                "val": round(float(c.val_acc[:, -1].mean()), 4),
                "test": round(a, 4),
                "lr": c.config.get("lr"),
                "front": bool(f),
            }
            for c, (a, _), f in zip(rows, truths, front)
        ],
    }


if __name__ == "__main__":  # .venv/bin/python benchmarks/peft_table/table.py tweets bbc_news
    for name in sys.argv[1:] or ["tweets", "bbc_news"]:
        d = describe(name)
        print(
            f"\n{name}: {d['candidates']} candidates, {d['runs']} runs ({d['multi_seed']} with "
            f">1 seed); validation {d['n_val']} / test {d['n_test']} examples, majority "
            f"{d['majority_test']:.3f}; best front HV {d['best_hv']:,.0f}; one validation "
            f"number's SE {d['val_se']:.3f}; seed SD of test accuracy (median) "
            f"{d['seed_sd_test_median'] if d['seed_sd_test_median'] is None else round(d['seed_sd_test_median'], 4)}"
        )
        print("| candidate | params | seeds | lr | val | true test | front |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in d["rows"]:
            if r["front"] or r["id"] in LORA_BASELINES or not r["id"].startswith("sobol"):
                print(
                    f"| {r['id']} | {r['params']:,} | {r['seeds']} | {r['lr']} | {r['val']:.3f} | "
                    f"{r['test']:.3f} | {'*' if r['front'] else ''} |"
                )
