"""How well the outlet rule labels outlets the model never saw: the fitted thresholds against the fixed ±1/3
rule, outlet Spearman, and the conformal label sets' coverage and size, overall and by outlet size.

    python -m bench.quality.outlet_rule                       # 5 folds grouped by source name, level 0.9
    python -m bench.quality.outlet_rule --group-by domain     # folds that hold out whole web domains

One pass of out-of-fold scoring with the library's own code (training/outlet_rule.py oof_scores: every
article scored by the default linear recipe fitted on the other folds, the folds `train` uses for its rule).
Then, for each fold k, the rule is fitted (fit_rule) on the out-of-fold outlet means of the other folds and
measured on fold k's outlets. That is nested for the rule (fold k's outlets and labels never reach its
thresholds or quantile), but not fully for the scores: the models that scored the other folds were trained
with fold k among their data. Outlets are source names, as `aggregate` keys them by default; accuracy
and Spearman count outlets with at least --min-articles articles, coverage and set size every outlet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA


def main(argv: list[str] | None = None) -> int:
    from allsides_batch.config import TrainConfig
    from allsides_batch.metrics import spearman
    from allsides_batch.training.data import load_labelled
    from allsides_batch.training.outlet_rule import SIZE_BINS, fit_rule, oof_scores, outlets_of, rule_report, size_bin
    from allsides_batch.training.train import text_prep

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(SHARED_DATA))
    ap.add_argument("--group-by", choices=["source", "domain"], default="source")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--min-articles", type=int, default=20)
    ap.add_argument("--max-articles", type=int, default=None, help="a seeded sample, for a quick check")
    ap.add_argument("--output", default=None, help="also write the per-fold results as JSON here")
    args = ap.parse_args(argv)

    cfg = TrainConfig(data=[args.data], group_by=args.group_by)
    data = load_labelled(cfg.data, cfg.columns, prep=text_prep(cfg))
    if args.max_articles and len(data) > args.max_articles:
        data = data.subset(np.sort(np.random.default_rng(cfg.seed).choice(len(data), args.max_articles, replace=False)))
    started = time.perf_counter()
    scores, assign = oof_scores(cfg, data, args.folds, jobs=args.jobs)
    seconds = time.perf_counter() - started
    sources = np.asarray(data.sources, dtype=object)
    rows = []
    for k in range(args.folds):
        rest, held = assign != k, assign == k
        rule = fit_rule(outlets_of(list(sources[rest]), data.labels[rest], scores[rest]), args.min_articles)
        test = outlets_of(list(sources[held]), data.labels[held], scores[held])
        report = rule_report(test, rule, args.level)
        big = test.n >= args.min_articles
        report["spearman"] = spearman(test.mean[big], test.label[big])
        report["thresholds"] = list(rule.thresholds)
        report["fold"] = k
        rows.append(report)

    def stat(values) -> str:
        v = np.asarray([x for x in values if x == x], dtype=np.float64)
        return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else (f"{v[0]:.3f}" if len(v) else "–")

    print(f"# Outlet rule, {args.folds} folds grouped by {args.group_by}, level {args.level}, "
          f"{len(data)} articles (out-of-fold scoring {seconds:.0f} s)\n")
    print("| fold | outlets ≥ min | accuracy fitted | accuracy ±1/3 | Spearman | thresholds | coverage | set size |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['fold']} | {r['outlets']} | {r['accuracy_fitted']:.3f} | {r['accuracy_fixed']:.3f} | "
              f"{r['spearman']:.3f} | {r['thresholds'][0]:+.3f} / {r['thresholds'][1]:+.3f} | "
              f"{r['coverage']:.3f} ({r['all_outlets']}) | {r['set_size']:.2f} |")
    delta = [r["accuracy_fitted"] - r["accuracy_fixed"] for r in rows]
    print(f"\naccuracy fitted {stat(r['accuracy_fitted'] for r in rows)}, "
          f"±1/3 {stat(r['accuracy_fixed'] for r in rows)}, "
          f"paired Δ {stat(delta)}; Spearman {stat(r['spearman'] for r in rows)}; "
          f"coverage {stat(r['coverage'] for r in rows)} at level {args.level}; "
          f"set size {stat(r['set_size'] for r in rows)}\n")
    print("| outlet size (articles) | outlets (all folds) | coverage | mean set size |")
    print("| --- | ---: | ---: | ---: |")
    for lo, _ in SIZE_BINS:
        name = size_bin(lo)
        cells = [r["by_size"][name] for r in rows]
        print(f"| {name} | {sum(c['outlets'] for c in cells)} | {stat(c['coverage'] for c in cells)} | "
              f"{stat(c['set_size'] for c in cells)} |")
    command = "python -m bench.quality.outlet_rule " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n{command.strip()} · {platform.node()} ({os.cpu_count()} CPUs) · {dt.date.today().isoformat()}")
    if args.output:
        Path(args.output).write_text(json.dumps({"command": command, "folds": rows, "oof_seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
