"""``autopeft study export``: the trials table as CSV / Parquet (pandas) and the Pareto trials'
adapters as one zip, through the CLI against a real controller; the older
``export ID TRIAL DIR`` form keeps working."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.api.conftest import (
    REPO,
    client_for,
    make_token,
    python_study,
    server_factory,  # noqa: F401  (fixtures)
    sqlite_url,  # noqa: F401
    workdir,  # noqa: F401
)

EXE = str(Path(sys.executable).parent / "autopeft")


@pytest.fixture
def finished(sqlite_url, server_factory):  # noqa: F811
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    study = client.create_study(
        spec=python_study("tests.api.workloads:with_checkpoint", max_trials=6, name="export-me")
    )
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.counts["complete"] == 6, study.counts

    def cli(*args, ok: bool = True):
        out = subprocess.run(
            [EXE, "study", "export", *map(str, args), "--url", server.url, "--token", token],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert (out.returncode == 0) == ok, (args, out.returncode, out.stdout, out.stderr)
        return out

    return client, study, cli


def test_trials_table_as_csv_and_parquet(finished, tmp_path):
    client, study, cli = finished
    trials = {t["id"]: t for t in study.trials()}
    cli(study.id, "--output", tmp_path / "trials.csv")
    cli(study.id, "--output", tmp_path / "out" / "trials.parquet")
    cli(study.id, "--output", tmp_path / "trials.data", "--format", "parquet")
    csv = pd.read_csv(tmp_path / "trials.csv")
    for df in (
        csv,
        pd.read_parquet(tmp_path / "out" / "trials.parquet"),
        pd.read_parquet(tmp_path / "trials.data"),
    ):
        assert len(df) == 6 and set(df["id"]) == set(trials)
        assert {"number", "state", "values.accuracy", "values.cost", "config.x", "config.y"} <= set(
            df.columns
        )
        for row in df.to_dict("records"):
            t = trials[row["id"]]
            assert row["state"] == "complete"
            assert row["values.accuracy"] == pytest.approx(t["values"]["accuracy"], rel=1e-12)
            assert row["config.x"] == pytest.approx(t["config"]["x"], rel=1e-12)
    data = (tmp_path / "trials.data").read_bytes()  # --format wins over the suffix
    assert data[:4] == data[-4:] == b"PAR1"
    assert (tmp_path / "trials.csv").read_text().splitlines()[0].startswith("id,number,state")


def test_pareto_adapters_as_one_zip_and_the_old_form(finished, tmp_path):
    client, study, cli = finished
    pareto = study.pareto()
    assert pareto
    out = cli(study.id, "--adapters", tmp_path / "pareto.zip", "--output", tmp_path / "t.csv")
    assert f"{len(pareto)} Pareto adapters" in out.stdout
    with zipfile.ZipFile(tmp_path / "pareto.zip") as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("pareto.json"))
        assert {t["id"] for t in manifest["trials"]} == {t["id"] for t in pareto}
        for t in pareto:
            folder = f"trial-{t['number']:05d}"
            assert zf.read(f"{folder}/weights.bin") == bytes(range(256))
            assert json.loads(zf.read(f"{folder}/adapter_config.json")) == {"x": t["config"]["x"]}
            # each adapter comes with its model card (where it came from, what it scored)
            assert (
                f"trial {t['id']} (number {t['number']}" in zf.read(f"{folder}/README.md").decode()
            )
        assert names == {"pareto.json"} | {
            f"trial-{t['number']:05d}/{f}"
            for t in pareto
            for f in ("weights.bin", "adapter_config.json", "README.md")
        }
    # the older form: one trial's adapter unpacked into a folder
    cli(study.id, pareto[0]["id"], tmp_path / "one")
    assert (tmp_path / "one" / "weights.bin").read_bytes() == bytes(range(256))


def test_bad_export_arguments_and_no_adapters(finished, sqlite_url, tmp_path, server_factory):  # noqa: F811
    client, study, cli = finished
    assert "nothing to export" in cli(study.id, ok=False).stderr
    assert (
        "--format needs --output"
        in cli(study.id, "--format", "csv", "--adapters", tmp_path / "a.zip", ok=False).stderr
    )
    assert "not found" in cli(999, "--output", tmp_path / "x.csv", ok=False).stderr.lower()
    # a study whose trials write no adapter: the zip is refused, nothing is left behind
    other = client.create_study(spec=python_study("tests.api.workloads:quick", max_trials=2))
    other.wait(timeout=120, poll=0.2, progress=False)
    err = cli(other.id, "--adapters", tmp_path / "none.zip", ok=False).stderr
    assert "no Pareto trial" in err
    assert not list(tmp_path.glob("none.zip*"))
