"""Scoring throughput of the full-text linear model through the production scorer (`score_corpus`:
Parquet in, worker processes, Parquet out, manifest), for 1 and for all cores' worker processes, side by
side in one run; and the transform alone in this process.

    python -m bench.speed.linear_score_bench --model models/latest --n 8000
Without --model, a linear model is trained first on every shared article (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import SHARED_DATA  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a linear (or ensemble) model directory")
    ap.add_argument("--data", default=str(SHARED_DATA))
    ap.add_argument("--n", type=int, default=8000, help="articles to score")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    import pyarrow.parquet as pq

    from allsides_batch.config import ScoreConfig, TrainConfig
    from allsides_batch.models.linear import LinearModel
    from allsides_batch.scoring import score_corpus
    from allsides_batch.text.prep import TextPrep, prepare_text
    from allsides_batch.training.train import train_model

    tmp = Path(tempfile.mkdtemp(prefix="linear-bench-"))
    try:
        model = args.model
        if model is None:
            model = str(tmp / "model")
            t0 = time.perf_counter()
            train_model(TrainConfig(kind="linear", data=[args.data], output=model))
            print(f"trained a linear model on {args.data} in {time.perf_counter() - t0:.0f} s")
        table = pq.read_table(args.data).slice(0, args.n)
        inp = tmp / "in.parquet"
        pq.write_table(table, inp)
        chars = np.mean([len(t) for t in table["text"].to_pylist()])
        print(f"machine: {os.cpu_count()}-core CPU ({platform.machine()}); {args.n} real articles, mean "
              f"{chars:.0f} characters; median of {args.repeats} runs")
        cores = os.cpu_count() or 1
        for workers in sorted({1, cores}):
            rates = []
            for r in range(args.repeats):
                out = tmp / f"out-{workers}-{r}"
                summary = score_corpus(ScoreConfig(model=model, input=[str(inp)], output=str(out), workers=workers,
                                                   progress=False))
                rates.append(summary.articles_per_s)
            print(f"score_corpus, {workers} worker process(es): {np.median(rates):,.0f} articles/s "
                  f"(runs: {', '.join(f'{x:,.0f}' for x in rates)}; worker start-up and vocabulary load included)")
        linear = LinearModel.load(model)
        prep = TextPrep.load(model)
        rows = table.to_pydict()
        texts = [prepare_text(t, x, prep, source=s) for t, x, s in zip(rows["title"], rows["text"], rows["source"])]
        linear.logits(texts[:10])  # builds the vocabulary index once
        t0 = time.perf_counter()
        linear.logits(texts)
        print(f"LinearModel.logits alone, one process: {len(texts) / (time.perf_counter() - t0):,.0f} articles/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
