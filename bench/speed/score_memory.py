"""Peak memory of the scorer against corpus size: 20k articles vs 200k, same files of 20k rows each.

The corpus is synthetic, built from the shared AllSides texts (cycled with fresh ids, each text cut to
--chars characters to keep the disk and the run small). Each size is scored by its own
`python -m allsides_batch score` process; its peak RSS is read with getrusage. Streaming holds a few
record batches at a time, so the peak must not grow with the corpus (target: within 10%).

    python -m bench.speed.score_memory                 # tiny DistilBERT, max_length 32, CPU
    python -m bench.speed.score_memory --model DIR --max-length 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from bench.common import SHARED_DATA, minilm_path  # noqa: E402

FILE_ROWS = 20_000


def tiny_model(out: Path) -> str:
    """The test suite's tiny DistilBERT (2 layers, 32 dims, real uncased vocabulary)."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from allsides_batch.models.identity import ID2LABEL, LABEL2ID

    if not (out / "config.json").exists():
        torch.manual_seed(0)
        config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                  max_position_embeddings=512, num_labels=3, id2label=ID2LABEL, label2id=LABEL2ID)
        DistilBertForSequenceClassification(config).save_pretrained(out, safe_serialization=True)
        AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(out)
    return str(out)


def build_corpus(root: Path, rows: int, chars: int) -> Path:
    """rows synthetic articles in files of FILE_ROWS, cycling the shared texts with fresh ids."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    base = pq.read_table(SHARED_DATA, columns=["title", "text", "source", "date", "url", "source_url"])
    base = base.set_column(1, "text", pc.utf8_slice_codeunits(base["text"], 0, chars))
    out = root / f"corpus-{rows}"
    out.mkdir(parents=True)
    for f, start in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - start)
        idx = pa.array([(start + i) % base.num_rows for i in range(n)])
        part = base.take(idx).append_column("id", pa.array([f"syn-{start + i}" for i in range(n)]))
        pq.write_table(part, out / f"part-{f:03d}.parquet")
    return out


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS of the process in MiB, seconds), measured in a fresh wrapper so peaks don't mix."""
    probe = ("import resource, subprocess, sys, json, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
             "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
             "time.perf_counter() - t]))")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True)
    rss, seconds = json.loads(out.stdout.strip().splitlines()[-1])
    return rss, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model directory (default: the tiny DistilBERT)")
    ap.add_argument("--sizes", default="20000,200000")
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--chars", type=int, default=1500, help="characters kept of each shared text")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="score-memory-"))
    model = args.model or tiny_model(work / "tiny-model")
    results = []
    for rows in (int(s) for s in args.sizes.split(",")):
        t = time.perf_counter()
        corpus = build_corpus(work, rows, args.chars)
        built = time.perf_counter() - t
        cmd = [sys.executable, "-m", "allsides_batch", "score", "--model", model, "--input", str(corpus),
               "--output", str(work / f"out-{rows}"), "--max-length", str(args.max_length), "--device", "cpu",
               "--workers", str(args.workers), "--no-progress"]
        rss, seconds = peak_rss_mb(cmd)
        results.append({"rows": rows, "peak_rss_mib": round(rss, 1), "score_seconds": round(seconds, 1),
                        "articles_per_s": round(rows / seconds, 1), "corpus_build_seconds": round(built, 1)})
        print(json.dumps(results[-1]), flush=True)
    growth = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"] - 1
    print(json.dumps({"model": model, "max_length": args.max_length, "workers": args.workers,
                      "peak_rss_growth": round(growth, 4), "within_10_percent": abs(growth) <= 0.10}))


if __name__ == "__main__":
    main()
