"""Datasets: built-ins, users' files, bad data, the fixed split, subsampling, the token cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autopeft.errors import InvalidConfig
from autopeft.trials import data


def _write(path, content):
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# (file name, bytes, spec kwargs, column the message must name or None, field)
BAD_FILES = [
    ("missing_label.csv", "text,sentiment\nhello,pos\n", {}, "label", "workload.label_column"),
    ("missing_text.csv", "body,label\nhello,pos\n", {}, "text", "workload.text_column"),
    (
        "missing_pair.csv",
        "text,label\nhello,pos\n",
        {"text_column": ["text", "hypothesis"]},
        "hypothesis",
        "workload.text_column",
    ),
    ("empty.csv", "", {}, None, "workload.dataset"),
    ("blank.csv", "\n\n  \n", {}, None, "workload.dataset"),
    ("header_only.csv", "text,label\n", {}, None, "workload.dataset"),
    (
        "outside.csv",
        "text,label\na,pos\nb,neg\nc,maybe\n",
        {"labels": ["pos", "neg"]},
        "label",
        "workload.labels",
    ),
    (
        "outside_num.jsonl",
        '{"text": "a", "label": 0}\n{"text": "b", "label": 3}\n',
        {"labels": [0, 1]},
        "label",
        "workload.labels",
    ),
    (
        "undecodable_text.csv",
        b"text,label\nfine,pos\ncaf\xe9 bad,neg\n",
        {},
        "text",
        "workload.encoding",
    ),
    (
        "undecodable_label.csv",
        b"text,label\nfine,pos\nok,n\xffg\n",
        {},
        "label",
        "workload.encoding",
    ),
    (
        "undecodable.jsonl",
        b'{"text": "ok", "label": "pos"}\n{"text": "bad \xff", "label": "neg"}\n',
        {},
        "text",
        "workload.encoding",
    ),
    ("no_label_value.csv", "text,label\na,pos\nb,\n", {}, "label", "workload.label_column"),
    ("short_row.csv", "label,text\npos,a\nneg\n", {}, "text", "workload.text_column"),
    (
        "missing_key.jsonl",
        '{"text": "a", "label": "pos"}\n{"text": "b"}\n',
        {},
        "label",
        "workload.label_column",
    ),
    (
        "bad_json.jsonl",
        '{"text": "a", "label": "pos"}\n{"text": "b", label}\n',
        {},
        None,
        "workload.dataset",
    ),
    ("one_class.csv", "text,label\na,pos\nb,pos\n", {}, "label", "workload.label_column"),
]


@pytest.mark.parametrize(
    "name, content, kwargs, column, field", BAD_FILES, ids=[b[0] for b in BAD_FILES]
)
def test_bad_data_names_file_and_column(tmp_path, name, content, kwargs, column, field):
    path = _write(tmp_path / name, content)
    with pytest.raises(InvalidConfig) as err:
        data.read_examples(data.data_spec(str(path), **kwargs))
    message = str(err.value)
    assert str(path) in message
    if column is not None:
        assert repr(column) in message
    assert err.value.field == field


def test_header_check_is_cheap_but_catches_missing_columns(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\n" + "x,y\n" * 3)
    data.check_header(data.data_spec(str(path)))
    with pytest.raises(InvalidConfig, match="'lbl'"):
        data.check_header(data.data_spec(str(path), label_column="lbl"))
    jsonl = _write(tmp_path / "d.jsonl", '{"t": "a", "y": 1}\n')
    with pytest.raises(InvalidConfig, match="'text'"):
        data.check_header(data.data_spec(str(jsonl), label_column="y"))


def test_csv_jsonl_and_declared_label_order(tmp_path):
    rows = [("good one", "pos"), ('bad, "quoted"\nline', "neg"), ("meh", "neutral")]
    csv_path = tmp_path / "d.csv"
    import csv

    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "text"])
        writer.writerows([(label, text) for text, label in rows])
    raw = data.read_examples(data.data_spec(str(csv_path), labels=["neutral", "neg", "pos"]))
    assert [t[0] for t in raw.texts] == [r[0] for r in rows]
    assert raw.label_names == ("neutral", "neg", "pos")
    assert raw.labels.tolist() == [2, 1, 0]
    jsonl = _write(
        tmp_path / "d.jsonl",
        "\n".join(json.dumps({"a": t, "b": t[::-1], "y": i % 2}) for i, (t, _) in enumerate(rows))
        + "\n",
    )
    raw = data.read_examples(data.data_spec(str(jsonl), text_column=["a", "b"], label_column="y"))
    assert raw.label_names == ("0", "1") and raw.labels.tolist() == [0, 1, 0]
    assert raw.texts[0] == ("good one", "eno doog")


def test_builtin_datasets():
    tweets = data.read_examples(data.data_spec("tweets"))
    assert tweets.label_names == ("negative", "neutral", "positive")
    assert len(tweets.labels) == 38158
    assert np.bincount(tweets.labels).tolist() == [16186, 15018, 6954]
    bbc = data.read_examples(data.data_spec("bbc_news"))
    assert bbc.label_names == ("business", "entertainment", "politics", "sports", "tech")
    assert np.bincount(bbc.labels).tolist() == [510, 386, 417, 511, 401]
    assert all(t[0].strip() for t in bbc.texts)


def test_split_is_fixed_stratified_and_disjoint():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    train, val = data.split_indices(labels, 0.1, seed=0)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 1000
    assert np.bincount(labels[val]).tolist() == [50, 30, 20]
    train2, val2 = data.split_indices(labels, 0.1, seed=0)
    assert np.array_equal(val, val2) and np.array_equal(train, train2)
    _, val_other = data.split_indices(labels, 0.1, seed=1)
    assert not np.array_equal(val, val_other)
    _, capped = data.split_indices(labels, 0.1, seed=0, max_eval=50)
    assert len(capped) == 50 and set(capped) <= set(val)
    assert np.bincount(labels[capped]).tolist() == [25, 15, 10]


def test_stratified_take_proportions_nesting_and_rare_classes():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    pool = np.arange(1000)
    small = data.stratified_take(pool, labels, 100, seed=3)
    large = data.stratified_take(pool, labels, 400, seed=3)
    assert np.bincount(labels[small]).tolist() == [60, 30, 10]
    assert set(small) <= set(large)  # nested fidelities
    assert np.array_equal(small, data.stratified_take(pool, labels, 100, seed=3))
    tiny = data.stratified_take(pool, labels, 3, seed=0)
    assert sorted(labels[tiny].tolist()) == [0, 1, 2]  # every class kept
    assert len(data.stratified_take(pool, labels, 5000, seed=0)) == 1000


class _Counting:
    """A real tokenizer wrapper that counts calls (to see cache hits)."""

    def __init__(self, tok):
        self.tok, self.calls = tok, 0
        self.pad_token_id = tok.pad_token_id

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)


def test_token_cache_hits_and_keys(tmp_path, tiny_model, small_csv):
    from transformers import AutoTokenizer

    tok = _Counting(AutoTokenizer.from_pretrained(tiny_model))
    spec = data.data_spec(str(small_csv))
    first, hit1 = data.load_tokenized(spec, tok, tiny_model, 32, root=tmp_path)
    again, hit2 = data.load_tokenized(spec, tok, tiny_model, 32, root=tmp_path)
    assert (hit1, hit2, tok.calls) == (False, True, 1)
    for name in ("ids", "offsets", "labels"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert first.label_names == again.label_names and first.fingerprint == again.fingerprint
    _, hit3 = data.load_tokenized(spec, tok, tiny_model, 16, root=tmp_path)  # other length
    assert not hit3
    copy = _write(tmp_path / "copy.csv", small_csv.read_bytes() + b"one more row,pos\n")
    _, hit4 = data.load_tokenized(data.data_spec(str(copy)), tok, tiny_model, 32, root=tmp_path)
    assert not hit4
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 3


def test_tokenized_batches_and_pairs(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    path = _write(
        tmp_path / "pairs.jsonl",
        "".join(
            json.dumps({"p": "a cat " * (i + 1), "h": "sits", "label": i % 2}) + "\n"
            for i in range(6)
        ),
    )
    tokens, _ = data.load_tokenized(
        data.data_spec(str(path), text_column=["p", "h"]), tok, tiny_model, 12, root=tmp_path
    )
    assert tokens.lengths(np.arange(6)).max() == 12  # truncated
    batch = tokens.batch(np.array([0, 5]))
    assert batch["input_ids"].shape == (2, 12)
    assert batch["attention_mask"][0].sum() == tokens.lengths(np.array([0]))[0]
    assert batch["token_type_ids"][0].max() == 1  # second segment
    assert (batch["input_ids"][0][batch["attention_mask"][0] == 0] == tok.pad_token_id).all()
    expected = tok("a cat ", "sits")["input_ids"]
    assert batch["input_ids"][0][: len(expected)].tolist() == expected
    assert tokens.batch(np.array([0]), pad_to=20)["input_ids"].shape == (1, 20)


# -- server paths: data roots, system folders, no file content in any message ---------------------
SECRET = "s3cr3t-value-that-must-never-leak"


def test_system_folders_and_non_files_are_never_datasets(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIRS_ENV, raising=False)
    for path in (
        "/proc/self/environ",
        "/proc/self/status",
        "/dev/null",
        "/sys/kernel/notes",
        str(tmp_path),
    ):
        with pytest.raises(InvalidConfig) as err:
            data.data_spec(path, format="csv")
        assert err.value.field == "workload.dataset"
    link = tmp_path / "env.csv"
    link.symlink_to("/proc/self/environ")
    with pytest.raises(InvalidConfig, match="system folders"):
        data.data_spec(str(link))


def test_data_roots_confine_paths_and_links(tmp_path, monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    good = _write(root / "d.csv", "text,label\na,pos\nb,neg\n")
    bad = _write(outside / "d.csv", "text,label\na,pos\nb,neg\n")
    (root / "escape.csv").symlink_to(bad)
    monkeypatch.setenv(data.DATA_DIRS_ENV, str(root))
    assert data.data_spec(str(good)).path == good.resolve()
    assert data.data_spec(str(root / "sub" / ".." / "d.csv")).path == good.resolve()
    for path in (bad, root / "escape.csv", root / ".." / "outside" / "d.csv", "/etc/passwd"):
        with pytest.raises(InvalidConfig, match="AUTOPEFT_DATA_DIRS") as err:
            data.data_spec(str(path))
        assert err.value.field == "workload.dataset"
    monkeypatch.setenv(data.DATA_DIRS_ENV, "")  # set but empty: no server path at all
    with pytest.raises(InvalidConfig, match="upload the file"):
        data.data_spec(str(good))
    assert data.data_spec("tweets").name == "tweets"  # built-ins stay available


@pytest.mark.parametrize(
    "content, kwargs",
    [
        (f"{SECRET}:x:0:0\nroot:x:0:0\n", {"format": "csv"}),  # like /etc/passwd
        (f"{SECRET}=1\0HOME=/root\0", {"format": "csv"}),  # like /proc/self/environ
        (f'{{"{SECRET}": 1}}\n', {"format": "jsonl"}),
        (f"text,label\na,{SECRET}\n", {"labels": ["pos", "neg"]}),  # undeclared label
        (f"text,label\na,{SECRET}\nb,{SECRET}\n", {}),  # a single label
        (f"text,{SECRET}\na,pos\n", {"label_column": "label"}),
        (f"{SECRET},label\n\xff,pos\n".encode("latin-1"), {"text_column": "t"}),  # undecodable byte
    ],
)
def test_no_message_contains_file_content(tmp_path, monkeypatch, content, kwargs):
    monkeypatch.delenv(data.DATA_DIRS_ENV, raising=False)
    path = _write(tmp_path / "leak.txt", content)
    with pytest.raises(InvalidConfig) as err:
        spec = data.data_spec(str(path), **kwargs)
        data.check_header(spec)
        data.read_examples(spec)
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("encoding", ["no-such-codec", "base64", "rot13", "utf\x00-8", ""])
def test_encodings_must_be_text_codecs(tmp_path, encoding):
    path = _write(tmp_path / "d.csv", "text,label\na,pos\nb,neg\n")
    with pytest.raises(InvalidConfig) as err:
        data.data_spec(str(path), encoding=encoding)
    assert err.value.field == "workload.encoding"
