"""End-to-end scoring throughput, side by side in one run: our scorer vs transformers.pipeline.

Parquet in → Parquet out over the same real AllSides articles, same model, same max_length, same machine.
Prints articles/s for both and their ratio, whether the labels are identical, the int8 speed-up and its
label agreement, and on a GPU also the forward-only rate and the FLOP ceiling.

    python -m bench.speed.score_bench --model /tmp/ft-minilm --n 128 --max-length 512
Without --model, the pretrained MiniLM gets a seeded 3-way head (saved once to a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from bench.common import SHARED_DATA, minilm_path  # noqa: E402


def seeded_minilm(out: Path) -> str:
    """The pretrained MiniLM with a fixed random head, so every path scores the very same weights."""
    import torch

    from allsides_batch.models.hub import load_base_model, load_tokenizer, save_model

    if not (out / "config.json").exists():
        torch.manual_seed(0)
        base = minilm_path()
        save_model(load_base_model(base), load_tokenizer(base), str(out))
    return str(out)


def write_input(n: int, out: Path) -> Path:
    import pyarrow.parquet as pq

    table = pq.read_table(SHARED_DATA, columns=["id", "title", "text", "source", "date", "url", "source_url"])
    table = table.take(list(range(0, table.num_rows, table.num_rows // n))[:n])  # spread over the file
    path = out / "input" / "articles.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    return path


def run_ours(model: str, inp: Path, out: Path, max_length: int, **kw) -> tuple[float, dict[str, str], dict]:
    import pyarrow.dataset as ds

    from allsides_batch.config import ScoreConfig
    from allsides_batch.scoring import score_corpus

    cfg = ScoreConfig(model=model, input=[str(inp)], output=str(out), max_length=max_length, progress=False, **kw)
    start = time.perf_counter()
    summary = score_corpus(cfg)
    seconds = time.perf_counter() - start
    scores = ds.dataset(str(out / "scores"), partitioning="hive").to_table(columns=["id", "label"])
    return seconds, dict(zip(scores["id"].to_pylist(), scores["label"].to_pylist())), summary.to_dict()


def run_pipeline(model: str, inp: Path, out: Path, max_length: int, device: int) -> tuple[float, dict[str, str]]:
    """The Hugging Face pipeline as its docs suggest, reading and writing the same Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import pipeline

    from allsides_batch.scoring.engine import prepare_rows
    from allsides_batch.text.prep import TextPrep

    start = time.perf_counter()
    clf = pipeline("text-classification", model=model, batch_size=32, device=device)
    table = pq.read_table(inp)
    # The same text preparation as the scorer (title, whitespace, outlet masking when the model asks for it).
    texts = prepare_rows(TextPrep.load(model), table["title"].to_pylist(), table["text"].to_pylist(),
                         table["source"].to_pylist())
    preds = clf(texts, truncation=True, max_length=max_length)
    labels = [p["label"].lower() for p in preds]
    pq.write_table(pa.table({"id": table["id"], "label": labels}), out, compression="zstd")
    seconds = time.perf_counter() - start
    return seconds, dict(zip(table["id"].to_pylist(), labels))


def gpu_figures(model: str, max_length: int, batch: int = 256) -> dict:
    """Forward-only articles/s on pre-tokenized input (bf16, SDPA) and the FLOP ceiling from a measured
    bf16 matmul rate and the model's FLOPs per article."""
    import torch

    from allsides_batch.models.hub import load_classifier

    m = load_classifier(model).cuda().eval()
    cfg = m.config
    ids = torch.randint(1000, 20000, (batch, max_length), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            m(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
        start, reps = time.perf_counter(), 10
        for _ in range(reps):
            m(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
    forward = batch * reps / (time.perf_counter() - start)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    tflops = 20 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
    hidden = getattr(cfg, "hidden_size", None) or cfg.dim
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layers
    embed = sum(p.numel() for n, p in m.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in m.parameters()) - embed
    flops = 2 * dense * max_length + layers * 4 * max_length**2 * hidden  # matmuls + attention scores/values
    return {"gpu_forward_articles_per_s": round(forward, 1), "bf16_matmul_tflops": round(tflops, 1),
            "gflop_per_article": round(flops / 1e9, 1), "flop_ceiling_articles_per_s": round(tflops * 1e12 / flops, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model directory (default: pretrained MiniLM with a seeded head)")
    ap.add_argument("--n", type=int, default=128, help="articles")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: the scorer's)")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 comparison")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, alternately forward and mirrored order")
    args = ap.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="score-bench-"))
    model = args.model or seeded_minilm(Path(tempfile.gettempdir()) / "minilm-seeded-head")
    inp = write_input(args.n, work)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                         f"{torch.cuda.get_device_name() if device == 'cuda' else 'no GPU'}",
              "torch": torch.__version__, "model": model, "n": args.n, "max_length": args.max_length}
    print(json.dumps(result), flush=True)

    # Runs in mirrored order (pipeline, ours, int8, int8, ours, pipeline with --rounds 2): on a shared
    # machine whose load drifts, each path sees the same drift on average. Times are summed per path.
    paths = ["pipeline", "ours"] + (["int8"] if device == "cpu" and not args.no_int8 else [])
    order = [p for r in range(args.rounds) for p in (paths if r % 2 == 0 else paths[::-1])]
    seconds = dict.fromkeys(paths, 0.0)
    labels: dict[str, dict[str, str]] = {}
    for i, path in enumerate(order):
        if path == "pipeline":
            s, labels[path] = run_pipeline(model, inp, work / f"pipeline-{i}.parquet", args.max_length,
                                           0 if device == "cuda" else -1)
        else:
            s, labels[path], _ = run_ours(model, inp, work / f"{path}-{i}", args.max_length, workers=args.workers,
                                          **({"quantize": "int8", "quantize_check": 0} if path == "int8" else {}))
        seconds[path] += s
        print(f"{path}: {args.n / s:.2f} articles/s ({s:.1f} s)", flush=True)
    rate = {p: args.n * args.rounds / seconds[p] for p in paths}
    o_labels, p_labels = labels["ours"], labels["pipeline"]
    result.update(pipeline_articles_per_s=round(rate["pipeline"], 2), ours_articles_per_s=round(rate["ours"], 2),
                  ratio=round(seconds["pipeline"] / seconds["ours"], 3), labels_identical=o_labels == p_labels)
    # A model that puts nearly every article in one class makes agreement figures easy: say so.
    result["label_counts"] = {lab: list(o_labels.values()).count(lab) for lab in ("left", "center", "right")}
    result["label_agreement_with_pipeline"] = round(sum(o_labels[k] == p_labels[k] for k in p_labels) / args.n, 4)
    print(f"pipeline(batch_size=32) {rate['pipeline']:.2f} vs ours ({device}) {rate['ours']:.2f} articles/s: "
          f"ratio {result['ratio']:.2f}x; labels identical: {result['labels_identical']}", flush=True)
    if "int8" in paths:
        agree = sum(labels["int8"][k] == o_labels[k] for k in o_labels) / args.n
        result.update(int8_articles_per_s=round(rate["int8"], 2),
                      int8_speedup=round(seconds["ours"] / seconds["int8"], 3), int8_label_agreement=round(agree, 4))
        print(f"ours int8: {rate['int8']:.2f} articles/s; {result['int8_speedup']:.2f}x fp32; "
              f"label agreement {agree:.1%}", flush=True)
    if device == "cuda":
        result.update(gpu_figures(model, args.max_length))
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
