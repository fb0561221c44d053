"""Do frozen MiniLM-L6 sentence embeddings add anything to the default TF-IDF + logistic-regression model
on unseen outlets?

    python -m bench.quality.frozen_features              # embeds once (cached), then the 5 folds
    python -m bench.quality.frozen_features --refresh    # re-embed, overwriting the cache

Same protocol and folds as bench/quality/outlet_statistics.py (load_labelled, outlet_folds seed 12345, the inner
outlet-grouped validation split of make_split), whose cache runs/outlet_statistics/fold{0..4}.npz holds
the default linear model's out-of-fold test probabilities (model refit on train + validation) and its
inner-validation probabilities (first fit, training split only). Run that script first.

Step 1 embeds every article once with the pretrained all-MiniLM-L6-v2 (no fine-tuning): the package's
prepared text (prepare_text, as load_labelled gives it to the models), the first MAXLEN tokens (the
package's text.prep.encode: exactly truncation=True), mean of the last hidden state over the attention
mask, L2-normalised (what sentence-transformers does for this model). It times 200 random articles at
128 tokens first; if all articles would take more than 25 minutes at that rate it embeds at 64 tokens.
Cache: runs/frozen_features/emb_<maxlen>.npy, rows in load_labelled order (ids checked on reuse).

Step 2, per fold (train = training split, val = inner validation split, test = held-out fold):
  (a) embedding LR: standardised embeddings, multinomial LogisticRegression, C chosen by inner-val macro-F1
      (ties: lower val log loss), then refit on train + val with that C (as the default linear model's
      refit) and tested;
  (b) late fusion: p ∝ exp(w · log p_linear + (1 − w) · log p_emb), w on a 0..1 grid (0.05 steps) chosen
      on the inner validation split with both members' first-fit (training split only) probabilities —
      by val log loss (what the package's ensemble minimises) and, as a second row, by val macro-F1 —
      then applied to the refit members' test probabilities;
  (c) early fusion (embeddings hstacked with the 200k-column TF-IDF matrix, one LR) is not run: it needs
      the TF-IDF LR refit twice per fold (~170 s a fold on this machine, plus a C / scale search).
Metrics: allsides_batch.metrics.classification_report and outlet_agreement (outlets with >=
OUTLET_MIN_ARTICLES test articles), mean ± sd over folds, paired per-fold differences against the
default linear row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: the machine is shared
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from bench.common import REPO, SHARED_DATA, minilm_path  # noqa: E402

STATS_CACHE = REPO / "runs" / "outlet_statistics"
CACHE = REPO / "runs" / "frozen_features"
FOLDS = 5
PROBE = 200
BUDGET_S = 25 * 60
BATCH = 32
C_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # 1e-3 was chosen twice
W_GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)


# ----------------------------------------------------------------------------------------------- step 1

def _embed(texts: list[str], max_length: int, tok, model) -> np.ndarray:
    """(N, 384) float32 L2-normalised mean-pooled MiniLM embeddings of each text's first max_length tokens."""
    import torch

    from allsides_batch.text.prep import encode

    ids, lengths, _ = encode(tok, texts, max_length)
    order = np.argsort(lengths, kind="stable")       # similar lengths together: less padding
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    pad = tok.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            width = max(lengths[i] for i in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                input_ids[j, :lengths[i]] = torch.tensor(ids[i])
                mask[j, :lengths[i]] = 1
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (B, T, H)
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
    return out


def embed_all(data, refresh: bool) -> tuple[np.ndarray, int, dict]:
    import hashlib

    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    ids_hash = hashlib.sha256("\n".join(data.ids).encode()).hexdigest()
    meta_path = CACHE / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if not refresh and meta.get("ids_sha256") == ids_hash:
        path = CACHE / f"emb_{meta['max_length']}.npy"
        if path.is_file():
            emb = np.load(path)
            if emb.shape[0] == len(data):
                print(f"step 1: embeddings cached in {path} ({emb.shape}); measured earlier: {meta['report']}")
                return emb, int(meta["max_length"]), meta
    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    print(f"step 1: MiniLM from {path}, torch threads {torch.get_num_threads()}", flush=True)
    probe = np.sort(np.random.default_rng(0).choice(len(data), PROBE, replace=False))
    _embed([data.texts[i] for i in probe[:16]], 128, tok, model)      # warm-up
    t = time.perf_counter()
    _embed([data.texts[i] for i in probe], 128, tok, model)
    probe_s = time.perf_counter() - t
    rate = PROBE / probe_s
    projected = len(data) / rate
    max_length = 128 if projected <= BUDGET_S else 64
    print(f"step 1: probe {PROBE} random articles at 128 tokens: {probe_s:.1f} s, {rate:.1f} articles/s -> "
          f"all {len(data)} would take {projected / 60:.1f} min ({'within' if max_length == 128 else 'over'} the "
          f"{BUDGET_S // 60}-min budget): embedding at max_length {max_length}", flush=True)
    t = time.perf_counter()
    chunks = []
    step = 2048
    for start in range(0, len(data), step):
        chunks.append(_embed(data.texts[start:start + step], max_length, tok, model))
        done = min(start + step, len(data))
        el = time.perf_counter() - t
        print(f"step 1: {done}/{len(data)} embedded, {el:.0f} s, {done / el:.1f} articles/s", flush=True)
    emb = np.concatenate(chunks)
    total_s = time.perf_counter() - t
    report = (f"probe {rate:.1f} articles/s at 128 tokens ({PROBE} articles, {probe_s:.1f} s); all {len(data)} at "
              f"max_length {max_length}: {total_s:.0f} s, {len(data) / total_s:.1f} articles/s, 1 thread")
    print(f"step 1: {report}", flush=True)
    np.save(CACHE / f"emb_{max_length}.npy", emb)
    meta = {"ids_sha256": ids_hash, "max_length": max_length, "report": report, "probe_rate": rate,
            "total_seconds": total_s, "model": path}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return emb, max_length, meta


# ----------------------------------------------------------------------------------------------- step 2

def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-12, 1.0))


def fuse(p_lin: np.ndarray, p_emb: np.ndarray, w: float) -> np.ndarray:
    z = w * _log(p_lin) + (1.0 - w) * _log(p_emb)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_emb_lr(x_tr, y_tr, x_va, y_va, x_rest, y_rest, x_te):
    """C by inner-val macro-F1 (ties: val log loss); refit on train + val. Returns val probs (first fit),
    test probs (refit), chosen C and the per-C validation table."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from allsides_batch.metrics import classification_report

    sc = StandardScaler().fit(x_tr)
    a_tr, a_va = sc.transform(x_tr), sc.transform(x_va)
    best, table = None, []
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=2000).fit(a_tr, y_tr)
        pv = clf.predict_proba(a_va)
        r = classification_report(y_va, pv)
        table.append((c, r["macro_f1"], r["log_loss"]))
        key = (r["macro_f1"], -r["log_loss"])
        if best is None or key > best[0]:
            best = (key, c, pv)
    _, c, val_probs = best
    sc2 = StandardScaler().fit(x_rest)
    clf = LogisticRegression(C=c, max_iter=2000).fit(sc2.transform(x_rest), y_rest)
    return val_probs, clf.predict_proba(sc2.transform(x_te)), c, table


def evaluate(emb: np.ndarray, data, assign: np.ndarray, cfg) -> dict:
    from allsides_batch.config import OUTLET_MIN_ARTICLES
    from allsides_batch.metrics import classification_report, outlet_agreement
    from allsides_batch.training.data import make_split

    rows = ["default linear (cached)", "(a) embedding LR", "(b) late fusion, w by val log loss",
            "(b) late fusion, w by val macro-F1"]
    res = {r: {"macro_f1": [], "accuracy": [], "ece": [], "spearman": [], "seconds": []} for r in rows}
    details = []
    for f in range(FOLDS):
        t0 = time.perf_counter()
        z = np.load(STATS_CACHE / f"fold{f}.npz")
        rest_idx = np.flatnonzero(assign != f)
        test_idx = np.flatnonzero(assign == f)
        rest = data.subset(rest_idx)
        train_idx, val_idx = make_split(rest, cfg.split, cfg.val_fraction, cfg.seed, cfg.group_by)
        tr, va = rest_idx[train_idx], rest_idx[val_idx]
        y = data.labels
        # the cache must be these very rows
        assert np.array_equal(z["test_labels"], y[test_idx]) and np.array_equal(z["val_labels"], y[va])
        assert z["test_sources"].tolist() == [data.sources[i] for i in test_idx]
        assert np.array_equal(z["rest_labels"], y[rest_idx])
        sources = [data.sources[i] for i in test_idx]
        y_te = y[test_idx]
        lin_test, lin_val = z["test_probs"], z["val_probs"]
        prep_s = time.perf_counter() - t0

        def record(name, probs, seconds, y_te=y_te, sources=sources):  # this fold's rows
            r = classification_report(y_te, probs)
            o = outlet_agreement(sources, y_te, probs, min_articles=OUTLET_MIN_ARTICLES)
            for k, v in (("macro_f1", r["macro_f1"]), ("accuracy", r["accuracy"]), ("ece", r["ece"]),
                         ("spearman", o["spearman"]), ("seconds", seconds)):
                res[name][k].append(v)
            return r, o

        _, o = record(rows[0], lin_test, float("nan"))
        pkg = float(z["package_spearman"])
        assert abs(o["spearman"] - pkg) < 1e-9, (o["spearman"], pkg)
        t1 = time.perf_counter()
        emb_val, emb_test, c, table = fit_emb_lr(emb[tr], y[tr], emb[va], y[va], emb[rest_idx], y[rest_idx],
                                                 emb[test_idx])
        emb_s = time.perf_counter() - t1 + prep_s
        record(rows[1], emb_test, emb_s)
        t2 = time.perf_counter()
        y_va = y[va]
        ll = [classification_report(y_va, fuse(lin_val, emb_val, w))["log_loss"] for w in W_GRID]
        f1 = [classification_report(y_va, fuse(lin_val, emb_val, w))["macro_f1"] for w in W_GRID]
        w_ll = float(W_GRID[int(np.argmin(ll))])
        w_f1 = float(W_GRID[max(range(len(W_GRID)), key=lambda i: (f1[i], -ll[i]))])
        fuse_s = time.perf_counter() - t2
        record(rows[2], fuse(lin_test, emb_test, w_ll), emb_s + fuse_s)
        record(rows[3], fuse(lin_test, emb_test, w_f1), emb_s + fuse_s)
        details.append({"fold": f, "train": len(tr), "val": len(va), "test": len(test_idx), "C": c,
                        "w_ll": w_ll, "w_f1": w_f1, "outlets": o["outlets"],
                        "val_linear_f1": classification_report(y_va, lin_val)["macro_f1"],
                        "val_emb_f1": classification_report(y_va, emb_val)["macro_f1"], "c_table": table})
        print(f"step 2: fold {f}: {len(tr)} train / {len(va)} val / {len(test_idx)} test, {o['outlets']} outlets; "
              f"emb C {c} (val macro-F1 linear {details[-1]['val_linear_f1']:.3f}, emb "
              f"{details[-1]['val_emb_f1']:.3f}); w_linear {w_ll} (log loss) / {w_f1} (macro-F1); "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        print("        val per C (C, macro-F1, log loss): "
              + "; ".join(f"{c_:g} {a:.3f} {b:.3f}" for c_, a, b in table), flush=True)
    return {"rows": rows, "res": res, "details": details}


def report(out: dict, max_length: int, meta: dict) -> None:
    rows, res = out["rows"], out["res"]

    def ms(v, fmt="{:.3f}"):
        v = np.asarray(v, dtype=float)
        v = v[~np.isnan(v)]
        if not len(v):
            return "n/a"
        return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1))}"

    base = res[rows[0]]
    print(f"\nembeddings: all-MiniLM-L6-v2, frozen, first {max_length} tokens; {meta['report']}")
    print("\n| row | macro-F1 | accuracy | ECE | outlet Spearman | Δ macro-F1 (paired) | Δ Spearman (paired) "
          "| Δ ECE (paired) | seconds / fold |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        m = res[r]
        d = {k: np.asarray(m[k]) - np.asarray(base[k]) for k in ("macro_f1", "spearman", "ece")}
        secs = ms(m["seconds"], "{:.0f}") if r != rows[0] else "cached (158-174 s/fold fit, outlet_statistics.log)"
        print(f"| {r} | {ms(m['macro_f1'])} | {ms(m['accuracy'])} | {ms(m['ece'])} | {ms(m['spearman'])} | "
              f"{ms(d['macro_f1'])} | {ms(d['spearman'])} | {ms(d['ece'])} | {secs} |")
    print("\nper fold (macro-F1 / Spearman):")
    for r in rows:
        m = res[r]
        print(f"  {r}: " + "  ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(m["macro_f1"], m["spearman"])))
    print("fold details: " + "; ".join(f"fold {d['fold']} C {d['C']} w_ll {d['w_ll']} w_f1 {d['w_f1']} "
                                       f"outlets {d['outlets']}" for d in out["details"]))
    print("\nverdict (a row 'beats' the default when its gain is positive and larger than the bar):")
    for metric, name in (("macro_f1", "macro-F1"), ("spearman", "outlet Spearman")):
        b = np.asarray(base[metric])
        sd = b.std(ddof=1)
        for r in rows[1:]:
            v = np.asarray(res[r][metric])
            d = v - b
            gain, dsd = d.mean(), d.std(ddof=1)
            print(f"- {name}, {r}: {v.mean():.3f} vs default {b.mean():.3f}: gain {gain:+.3f}; "
                  f"> fold sd of the default ({sd:.3f})? {'YES' if gain > sd else 'no'}; "
                  f"> its own paired sd ({dsd:.3f})? {'YES' if gain > 0 and gain > dsd else 'no'}; "
                  f"folds improved {int((d > 0).sum())}/{len(d)}")
    beats = [r for r in rows[1:] for metric in ("macro_f1", "spearman")
             if np.mean(np.asarray(res[r][metric]) - base[metric]) > np.std(base[metric], ddof=1)]
    print("- overall: " + (f"beats the default by more than the fold-to-fold sd: {sorted(set(beats))}" if beats
                           else "nothing beats the default by more than the fold-to-fold sd on either metric; "
                                "on that criterion the table ranks nothing."))
    print("- (c) early fusion not run: it needs the 200k-feature TF-IDF LR refit (twice a fold with the refit, "
          "plus a scale/C search) — too slow on one core.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA))
    ap.add_argument("--refresh", action="store_true", help="re-embed, overwriting the embedding cache")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from allsides_batch.config import TrainConfig
    from allsides_batch.training.data import load_labelled, outlet_folds
    from allsides_batch.training.train import text_prep

    missing = [f for f in range(FOLDS) if not (STATS_CACHE / f"fold{f}.npz").is_file()]
    if missing:
        sys.exit(f"runs/outlet_statistics/fold{missing}.npz missing: run bench/quality/outlet_statistics.py first")
    t_all = time.perf_counter()
    cfg = TrainConfig(data=[args.data])  # the `train` defaults, as bench/quality/outlet_statistics.py
    data = load_labelled(cfg.data, cfg.columns, prep=text_prep(cfg), fingerprint=False)
    assign = outlet_folds(data.groups(cfg.group_by), data.labels, FOLDS, cfg.seed)
    print(f"loaded {len(data)} articles, {len(set(data.sources))} outlets ({time.perf_counter() - t_all:.0f} s)",
          flush=True)
    t = time.perf_counter()
    emb, max_length, meta = embed_all(data, args.refresh)
    print(f"step 1 wall time: {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    out = evaluate(emb, data, assign, cfg)
    print(f"step 2 wall time: {time.perf_counter() - t:.0f} s", flush=True)
    report(out, max_length, meta)
    print(f"\ntotal wall time: {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
