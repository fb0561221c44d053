"""The transformer member of the accuracy protocol's ensemble row, fold by fold, on a GPU machine:
the library's own fit_transformer on the same outlet-grouped folds and inner validation splits as
bench/quality/accuracy.py, from the pack bench/gpu/pack.py makes. It saves each fold's validation and test
probabilities; bench/quality/accuracy.py --transformer-probs DIR then fits the linear member on this machine
(full texts), combines the two as the ensemble does and records the rows.

On the GPU machine (needs torch, transformers, pyarrow, scikit-learn, scipy; not polars or prefect):

    python -m bench.gpu.transformer --pack .gpu --out "$OUT" --deadline-s 480

Folds are independent: --folds-to-run 3,4 finishes a run that stopped at its deadline, in the same or
another session. Each fold writes fold<k>.npz (ids and probabilities) and updates folds.json (the
fold's training history and reports, the machine, the recipe) as soon as it ends, so a run stopped
at any point keeps every finished fold.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

# One process, no tokenizer workers: the fast tokenizer may use every core for its batched calls.
os.environ["TOKENIZERS_PARALLELISM"] = "true"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import REPO  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", default=str(REPO / ".gpu"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--folds-to-run", default=None, help="comma-separated fold numbers (default: all)")
    ap.add_argument("--group-by", choices=["source", "domain"], default="source")
    ap.add_argument("--epochs", type=int, default=None, help="default: accuracy.py's GPU budget")
    ap.add_argument("--max-train-samples", type=int, default=None, help="for a CPU smoke run only")
    ap.add_argument("--max-length", type=int, default=None,
                    help="tokens per article (default and most: the pack's); shorter only for a CPU smoke run")
    ap.add_argument("--eval-batch-size", type=int, default=256)
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="start no fold that would, at the slowest fold's pace so far, end after this")
    args = ap.parse_args()

    import numpy as np
    import torch

    from allsides_batch.config import TrainConfig
    from allsides_batch.storage.io import write_json
    from allsides_batch.text.prep import TextPrep
    from allsides_batch.training.cv import fold_assignment, inner_split, split_fold
    from allsides_batch.training.data import load_labelled
    from allsides_batch.training.fitted import limit_rows
    from allsides_batch.training.transformer import fit_transformer
    from bench.gpu.pack import ids_digest
    from bench.quality.accuracy import transformer_budget

    started = time.perf_counter()
    pack = Path(args.pack)
    meta = json.loads((pack / "pack.json").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    data = load_labelled([str(pack / "articles.parquet")], prep=TextPrep(), fingerprint=False)
    if len(data) != meta["articles"] or ids_digest(data.ids) != meta["ids_sha256_16"]:
        sys.exit("the pack's articles are not the ones it was made from: make it again with bench/gpu/pack.py")
    budget = transformer_budget(gpu, args.max_train_samples or 0)
    if args.max_length and args.max_length > meta["max_length"]:
        sys.exit(f"--max-length {args.max_length}: the pack holds {meta['max_length']} tokens per article")
    budget.update(max_length=args.max_length or meta["max_length"], eval_batch_size=args.eval_batch_size,
                  progress=False)
    if gpu:
        budget.pop("max_train_samples", None)
    else:  # a smoke run of this script on a CPU: the CPU budget, on at most --max-train-samples
        budget["max_train_samples"] = args.max_train_samples
    if args.epochs:
        budget["epochs"] = args.epochs
    # The ensemble's members train without a temperature of their own (training/ensemble.py).
    # The pack's float16 weights: load_base_model loads any checkpoint as float32 (the same values).
    cfg = TrainConfig(kind="transformer", data=[str(pack / "articles.parquet")], base_model=str(pack / "base-model"),
                      group_by=args.group_by, calibrate=False, **budget)
    assign = fold_assignment(cfg, data, args.folds, "outlet")
    todo = [int(f) for f in args.folds_to_run.split(",")] if args.folds_to_run else list(range(args.folds))
    machine = torch.cuda.get_device_name(0) if gpu else f"{os.cpu_count()}-core CPU ({platform.machine()})"
    record_path = out / "folds.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"folds": {}}
    record.update(machine=machine, torch=torch.__version__, pack=meta, folds_total=args.folds,
                  group_by=args.group_by, config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                  if k not in ("data", "columns", "base_model")})
    slowest = 0.0
    for fold in todo:
        elapsed = time.perf_counter() - started
        if args.deadline_s and slowest and elapsed + 1.1 * slowest > args.deadline_s:
            print(f"fold {fold}: not started ({elapsed:.0f} s gone, folds take up to {slowest:.0f} s, deadline "
                  f"{args.deadline_s:.0f} s); run it later with --folds-to-run", flush=True)
            continue
        t0 = time.perf_counter()
        rest, test = split_fold(data, assign, fold)
        train_idx, val_idx = inner_split(cfg, rest, "outlet")
        train, val = rest.subset(train_idx), rest.subset(val_idx)
        fitted = fit_transformer(cfg, limit_rows(train, cfg.max_train_samples, cfg.seed), val, test)
        np.savez_compressed(out / f"fold{fold}.npz", val_ids=np.asarray(val.ids), test_ids=np.asarray(test.ids),
                            val_probs=fitted.val_probs.astype(np.float32),
                            test_probs=fitted.test_probs.astype(np.float32))
        seconds = time.perf_counter() - t0
        slowest = max(slowest, seconds)
        m = fitted.metrics
        record["folds"][str(fold)] = {"seconds": seconds, "n_train": len(train), "n_val": len(val),
                                      "n_test": len(test), "metrics": m}
        write_json(str(record_path), record)  # as train writes metrics.json; atomic, so a kill keeps the last fold
        print(f"fold {fold}: {seconds:.0f} s, best epoch {m['best_epoch']}, test macro-F1 {m['test']['macro_f1']:.3f}, "
              f"Spearman {m['test']['outlets']['spearman']:.3f}, "
              f"{m['epochs'][-1]['train_samples_per_s']:.0f} training samples/s", flush=True)
    print(f"done in {time.perf_counter() - started:.0f} s; folds saved: {sorted(record['folds'])}", flush=True)


if __name__ == "__main__":
    main()
