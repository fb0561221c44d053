"""Reading labelled data, label normalisation, input expansion and outlet-grouped splits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allsides_batch.config import Columns
from allsides_batch.errors import UserError
from allsides_batch.storage.io import expand_inputs
from allsides_batch.training.data import (
    load_labelled,
    make_split,
    normalise_labels,
    outlet_folds,
    split_by_column,
    split_outlet,
    split_random,
)


@pytest.fixture(scope="module")
def real_labels(articles_path):
    table = pq.read_table(articles_path, columns=["source", "bias"])
    return table["source"].to_pylist(), table["bias"].to_numpy().astype(np.int64)


def test_labels_any_case_or_index():
    got = normalise_labels(["Left", " RIGHT ", "center", "Centre", 0, 1, 2, "2"])
    assert got.tolist() == [0, 2, 1, 1, 0, 1, 2, 2]


def test_unknown_labels_are_named():
    with pytest.raises(UserError, match=r"unknown label values: 'far-left' \(2x\).*left/center/right"):
        normalise_labels(["left", "far-left", "far-left", "right"])


def test_outlet_split_on_real_data_shares_no_outlet_and_keeps_class_mix(real_labels):
    sources, labels = real_labels
    train, val = split_outlet(sources, labels, 0.1, seed=12345)
    assert len(train) + len(val) == len(labels)
    assert not {sources[i] for i in train} & {sources[i] for i in val}
    assert 0.07 < len(val) / len(labels) < 0.13
    overall = np.bincount(labels, minlength=3) / len(labels)
    in_val = np.bincount(labels[val], minlength=3) / len(val)
    assert np.abs(overall - in_val).max() < 0.05, (overall, in_val)


@pytest.mark.slow
def test_outlet_split_same_seed_same_split_other_seed_other_split(real_labels):
    sources, labels = real_labels
    a = split_outlet(sources, labels, 0.1, seed=12345)[1]
    b = split_outlet(sources, labels, 0.1, seed=12345)[1]
    c = split_outlet(sources, labels, 0.1, seed=7)[1]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_folds_are_outlet_disjoint_and_cover_everything(real_labels):
    sources, labels = real_labels
    folds = outlet_folds(sources, labels, 5, seed=1)
    assert set(folds.tolist()) == set(range(5))
    owner: dict[str, int] = {}
    for s, f in zip(sources, folds):
        assert owner.setdefault(s, f) == f
    per_fold = Counter(folds.tolist())
    assert max(per_fold.values()) < 1.6 * min(per_fold.values())


def test_random_split_is_stratified():
    labels = np.array([0] * 100 + [1] * 50 + [2] * 30)
    train, val = split_random(labels, 0.2, seed=3)
    assert np.bincount(labels[val]).tolist() == [20, 10, 6]
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)


def test_split_by_column_keeps_train_and_valid_only():
    train, val, left_out = split_by_column(["train", "valid", None, "test", "Validation", "train"])
    assert train.tolist() == [0, 5] and val.tolist() == [1, 4] and left_out == 2


def _write(path, **cols):
    pq.write_table(pa.table(cols), path)
    return str(path)


def test_load_labelled_maps_columns_and_skips_empty_text(tmp_path, caplog):
    path = _write(tmp_path / "a.parquet", body=["One text.", "", "Two"], head=["T1", "T2", None],
                  rating=["LEFT", "right", "Center"], outlet=["A", "B", "C"])
    data = load_labelled([path], Columns(text="body", title="head", label="rating", source="outlet", id="none"))
    assert data.texts == ["T1\n\nOne text.", "Two"]
    assert data.labels.tolist() == [0, 1]
    assert data.sources == ["A", "C"]
    assert data.dropped == {"empty or null text": 1}
    assert "skipped 1 row(s) with empty or null text" in caplog.text
    assert data.files[0]["sha256"] and data.files[0]["bytes"] > 0


def test_load_labelled_falls_back_to_integer_bias(tmp_path):
    path = _write(tmp_path / "a.parquet", text=["x", "y"], bias=[2, 0], source=["A", "B"])
    assert load_labelled([path]).labels.tolist() == [2, 0]


def test_missing_columns_are_listed(tmp_path):
    path = _write(tmp_path / "a.parquet", body=["x"], bias_text=["left"], source=["A"])
    with pytest.raises(UserError, match=r"missing column\(s\) text; columns found: body, bias_text, source"):
        load_labelled([path])


def test_expand_inputs_directories_globs_and_missing(tmp_path):
    (tmp_path / "year=2024").mkdir()
    a = _write(tmp_path / "year=2024" / "a.parquet", x=[1])
    b = _write(tmp_path / "b.parquet", x=[2])
    (tmp_path / "notes.txt").write_text("not data")
    assert expand_inputs([str(tmp_path)]) == sorted([a, b])
    assert expand_inputs([str(tmp_path / "*.parquet")]) == [b]
    with pytest.raises(UserError, match="input not found"):
        expand_inputs([str(tmp_path / "nope.parquet")])
    with pytest.raises(UserError, match="no files match"):
        expand_inputs([str(tmp_path / "*.csv")])


@pytest.mark.slow
def test_column_split_uses_split_media(articles_sample):
    data = load_labelled([str(articles_sample)], split_column="split_media", fingerprint=False)
    train, val = make_split(data, "column:split_media", 0.1, seed=0)
    assert all(data.split_values[i] == "train" for i in train)
    assert all(data.split_values[i] == "valid" for i in val)


@pytest.mark.slow
def test_hf_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="could not load Hugging Face dataset 'no-such-org/no-such-data'"):
        load_labelled(["hf:no-such-org/no-such-data"])


def test_outlet_split_on_few_large_outlets_still_validates_every_label():
    # 12 outlets of 15 articles: each is bigger than a label's 10% share
    sources = [f"outlet {i // 15}" for i in range(180)]
    labels = np.array([(i // 15) % 3 for i in range(180)])
    train, val = split_outlet(sources, labels, 0.1, seed=0)
    assert sorted(set(labels[val].tolist())) == [0, 1, 2]
    assert sorted(set(labels[train].tolist())) == [0, 1, 2]
    assert not {sources[i] for i in train} & {sources[i] for i in val}


def test_registered_domain():
    from allsides_batch.outlets import registered_domain

    assert registered_domain("https://www.money.cnn.com/2017/x.html") == "cnn.com"
    assert registered_domain("http://www.bbc.co.uk/news") == "bbc.co.uk"
    assert registered_domain("nytimes.com/opinion") == "nytimes.com"
    assert registered_domain("https://user@10.0.0.1:8080/a") == "10.0.0.1"
    assert registered_domain("") is None and registered_domain(None) is None and registered_domain("localhost") is None


@pytest.mark.slow
def test_domain_grouped_split_keeps_each_domain_on_one_side(articles_path):
    from allsides_batch.outlets import registered_domain

    data = load_labelled([str(articles_path)], fingerprint=False)
    assert data.urls is not None and sum(u is not None for u in data.urls) > 0.9 * len(data)
    train, val = make_split(data, "outlet", 0.1, 12345, group_by="domain")
    domains = [registered_domain(u) or f"source:{s}" for u, s in zip(data.urls, data.sources)]
    assert not {domains[i] for i in train} & {domains[i] for i in val}
    # a source split does not give that: some domain (one publisher's columnists) lands on both sides
    train_s, val_s = make_split(data, "outlet", 0.1, 12345, group_by="source")
    assert {domains[i] for i in train_s} & {domains[i] for i in val_s}
    assert 0.05 < len(val) / len(data) < 0.15
