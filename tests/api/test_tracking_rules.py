"""What a study's tracking may name (``autopeft.api.tracking.rules``), without a server: local stores
and folders stay in the tracking folders, remote stores are http(s) only and never while the
server holds MLflow credentials, and artifacts go only where the rules allow."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopeft.api.tracking.rules import TrackingRules, check_tracking
from autopeft.errors import InvalidConfig


@pytest.fixture
def rules(tmp_path: Path) -> TrackingRules:
    return TrackingRules(tmp_path / "mlflow", tmp_path / "tensorboard", (tmp_path / "shared",))


def _field(call) -> str:
    with pytest.raises(InvalidConfig) as err:
        call()
    return err.value.field


def test_local_stores_stay_in_the_tracking_folders(rules, tmp_path):
    assert rules.mlflow_uri(None) == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert rules.mlflow_uri("sqlite:///a/b.db") == f"sqlite:///{tmp_path / 'mlflow' / 'a' / 'b.db'}"
    shared = tmp_path / "shared" / "x.db"
    assert rules.mlflow_uri(f"sqlite:///{shared}") == f"sqlite:///{shared}"  # operator's folder
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "out").symlink_to("/etc")
    for bad in (
        "sqlite:////etc/x.db",
        "sqlite:///../x.db",
        "sqlite:///out/x.db",  # a link out of the folder is judged by where it points
        f"sqlite:///{tmp_path / 'tensorboard' / 'x.db'}",  # the other sink's folder
        "sqlite://host/x.db",
        "sqlite:///x.db?mode=ro",
        "file:///tmp/mlruns",
        "mlruns",
        "postgresql://u@h/db",
        "databricks",
        "s3://bucket/x",
        "sqlite:///a%00b.db",
    ):
        assert _field(lambda bad=bad: rules.mlflow_uri(bad)) == "tracking.mlflow.tracking_uri", bad
    assert rules.tensorboard_dir(None, 7) == tmp_path / "tensorboard" / "study-7"
    assert rules.tensorboard_dir("team", 7) == tmp_path / "tensorboard" / "team"
    for bad in ("/etc", "../mlflow", "/proc/self"):
        assert _field(lambda bad=bad: rules.tensorboard_dir(bad, 7)) == "tracking.tensorboard.dir"


def test_remote_stores_are_http_only_and_never_get_the_servers_credentials(
    rules, tmp_path, monkeypatch
):
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert rules.mlflow_uri("https://mlflow.example.org") == "https://mlflow.example.org"
    assert _field(lambda: rules.mlflow_uri("http://")) == "tracking.mlflow.tracking_uri"
    closed = TrackingRules(tmp_path / "m", tmp_path / "t", remote=False)
    assert _field(lambda: closed.mlflow_uri("https://x.org")) == "tracking.mlflow.tracking_uri"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret")
    assert _field(lambda: rules.mlflow_uri("https://x.org")) == "tracking.mlflow.tracking_uri"
    own = TrackingRules(tmp_path / "m", tmp_path / "t", default_uri="https://ours.org")
    assert own.mlflow_uri("https://ours.org") == own.mlflow_uri(None) == "https://ours.org"


def test_remote_stores_reach_only_the_hosts_the_operator_allows(rules, tmp_path, monkeypatch):
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    # no list: never the server's own or a private network (literal, or a name resolving there)
    for bad in (
        "http://127.0.0.1:5000",
        "http://localhost:8642",
        "http://[::1]:80",
        "http://10.1.2.3",
        "https://192.168.0.7",
        "http://169.254.169.254/latest",  # cloud metadata
        "http://0.0.0.0:9",
        "http://db.internal",
    ):
        assert _field(lambda bad=bad: rules.mlflow_uri(bad)) == "tracking.mlflow.tracking_uri", bad
    assert rules.mlflow_uri("https://8.8.8.8") == "https://8.8.8.8"
    # a list: those hosts (and ports) only, loopback included when the operator names it
    listed = TrackingRules(
        tmp_path / "m", tmp_path / "t", hosts=("127.0.0.1:5000", "mlflow.example.org")
    )
    assert listed.mlflow_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert listed.mlflow_uri("https://mlflow.example.org/x") == "https://mlflow.example.org/x"
    for bad in ("http://127.0.0.1:5001", "https://8.8.8.8", "http://localhost:5000"):
        assert _field(lambda bad=bad: listed.mlflow_uri(bad)) == "tracking.mlflow.tracking_uri", bad


def test_artifacts_go_only_where_the_rules_allow(rules, tmp_path):
    local = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    inside = (tmp_path / "mlflow" / "artifacts" / "1" / "run" / "artifacts").as_uri()
    assert rules.artifacts_allowed(inside, local)
    assert not rules.artifacts_allowed("file:///etc/cron.d", local)
    assert not rules.artifacts_allowed("/etc/cron.d", local)
    remote = "https://mlflow.example.org"
    assert rules.artifacts_allowed("mlflow-artifacts:/1/abc/artifacts", remote)
    assert not rules.artifacts_allowed("mlflow-artifacts:/1/abc/artifacts", local)
    assert rules.artifacts_allowed("https://mlflow.example.org/api/artifacts", remote)
    assert not rules.artifacts_allowed("https://elsewhere.org/x", remote)
    assert not rules.artifacts_allowed(
        "s3://bucket/1/abc", remote
    )  # the server's cloud credentials


def test_malformed_values_name_the_field(rules):
    for tracking, field in (
        ({"mlflow": {"tracking_uri": "http://["}}, "tracking.mlflow.tracking_uri"),
        ({"tensorboard": {"dir": "a\x00b"}}, "tracking.tensorboard.dir"),
    ):
        assert _field(lambda t=tracking: check_tracking({"tracking": t}, rules)) == field


def test_missing_sink_packages_name_the_sink(rules, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # makes `import mlflow.tracking` fail
    spec = {"tracking": {"mlflow": {}, "tensorboard": None}}
    assert _field(lambda: check_tracking(spec, rules)) == "tracking.mlflow"
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    spec = {"tracking": {"mlflow": None, "tensorboard": {}}}
    assert _field(lambda: check_tracking(spec, rules)) == "tracking.tensorboard"
