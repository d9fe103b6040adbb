"""Is the table faithful? A live study's trials, looked up in the table, against what the live
study measured (issue 30).

Reads a finished study from a controller's database (``--db``, e.g. the demo's
``sqlite:///~/.autopeft/demo/autopeft.db``) and, for each trial whose config is a table candidate
(a baseline by its label, a searched config exactly equal to a Sobol candidate or a LoRA baseline
spelled per layer) and whose training seed the table recorded, compares every report's validation
accuracy, and the test accuracy of the trials the study tested, with the table's run of that
candidate and seed. The workload must be the table's (the demo's is ``tweets``'). Prints one line
a trial and the largest differences; ``--json`` writes them.

    .venv/bin/python benchmarks/peft_table/faithful.py --db sqlite:///$HOME/.autopeft/demo/autopeft.db --task tweets
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from table import LORA_BASELINES, Table  # noqa: E402

from autopeft.optim.records import config_key  # noqa: E402


def compare(db_url: str, task: str, study_id: int | None = None) -> dict:
    from sqlalchemy import create_engine, text

    from autopeft.api.db import normalise_url

    table = Table.load(task)
    space = table.load_space()
    by_config = {config_key(table.search_config(c)): c for c in table.search_ids}
    engine = create_engine(normalise_url(db_url))
    with engine.connect() as conn:
        sid = study_id or conn.execute(text("SELECT max(id) FROM studies")).scalar()
        spec = json.loads(
            conn.execute(text("SELECT spec FROM studies WHERE id = :s"), {"s": sid}).scalar()
        )
        trials = conn.execute(
            text(
                "SELECT id, number, kind, label, config, test_values, state FROM trials "
                "WHERE study_id = :s ORDER BY number"
            ),
            {"s": sid},
        ).all()
        reports = {
            t.id: conn.execute(
                text('SELECT step, "values" FROM trial_reports WHERE trial_id = :t ORDER BY id'),
                {"t": t.id},
            ).all()
            for t in trials
        }
    engine.dispose()
    seed = int((spec.get("workload") or {}).get("seed") or 0)
    rows, worst_val, worst_test = [], 0.0, 0.0
    for t in trials:
        config = json.loads(t.config) if isinstance(t.config, str) else t.config
        if t.kind == "baseline":
            cid = t.label if t.label in table.candidates else None
        else:
            try:
                cid = by_config.get(config_key(space.validate(config)))
            except Exception:  # a config of another space
                cid = None
        cand = table.candidates.get(cid) if cid else None
        if cand is None or seed not in cand.seeds:
            rows.append({"trial": t.number, "kind": t.kind, "candidate": None})
            continue
        slot = cand.seeds.index(seed)
        diffs = []
        for step, values in reports[t.id]:
            values = json.loads(values) if isinstance(values, str) else values
            live = values.get("accuracy")
            if live is None or step > cand.reports:
                continue
            diffs.append(abs(live - float(cand.val_acc[slot, step - 1])))
        test = json.loads(t.test_values) if isinstance(t.test_values, str) else t.test_values
        last = len(reports[t.id])
        test_diff = None
        if test and "test_accuracy" in test and t.state == "complete":
            test_diff = abs(test["test_accuracy"] - float(cand.test_acc[slot, last - 1]))
            worst_test = max(worst_test, test_diff)
        worst_val = max([worst_val, *diffs])
        rows.append(
            {
                "trial": t.number,
                "kind": t.kind,
                "candidate": cid,
                "reports": len(diffs),
                "max_val_diff": max(diffs) if diffs else None,
                "test_diff": test_diff,
            }
        )
    return {
        "study": sid,
        "seed": seed,
        "trials": rows,
        "matched": sum(r["candidate"] is not None for r in rows),
        "max_val_diff": worst_val,
        "max_test_diff": worst_test,
        "lora_baselines_as_search": sorted(LORA_BASELINES),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--task", default="tweets")
    ap.add_argument("--study", type=int)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    out = compare(args.db, args.task, args.study)
    for r in out["trials"]:
        if r["candidate"] is None:
            print(f"trial {r['trial']:>3} ({r['kind']}): not a table candidate")
        else:
            print(
                f"trial {r['trial']:>3} ({r['kind']}) = {r['candidate']}: {r['reports']} reports, "
                f"max |val diff| {r['max_val_diff']:.4f}"
                + (f", |test diff| {r['test_diff']:.4f}" if r["test_diff"] is not None else "")
            )
    print(
        f"{out['matched']} of {len(out['trials'])} trials are table candidates; largest |difference|: "
        f"validation {out['max_val_diff']:.4f}, test {out['max_test_diff']:.4f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
