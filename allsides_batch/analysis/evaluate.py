"""Evaluation against labelled data: article metrics and outlet-level agreement, as JSON and markdown.

`evaluate_model` scores the labelled articles through `score_corpus` (the production path: same text
preparation, truncation, batching, precision, calibration), then joins labels back by article id;
`evaluate_scores` does the join for scores already written by `score`. Metrics come from metrics.py.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import LABELS
from ..config import Columns, EvaluateConfig, ScoreConfig
from ..errors import UserError
from ..metrics import classification_report, outlet_agreement
from ..models.files import METRICS_FILE, TRAINING_RECIPE_FILE, read_model_json
from ..outlets import Conflicts, choose_model, first_rows, fixed_thresholds, label_of, read_training_outlets
from ..schema import ID, MODEL_ID, PROB_COLUMNS, REASON, SCORED_AT, SOURCE, SOURCE_URL
from ..storage.io import (
    atomic_write_text,
    check_output_dir,
    exists,
    expand_inputs,
    file_fingerprint,
    join,
    read_json,
    read_table,
    schema_names,
    write_json,
)
from ..storage.layout import Layout, run_summary


@dataclass
class Labelled:
    """The labelled rows chosen by --split: aligned ids, label indices (0/1/2) and outlets."""

    ids: list[str]
    labels: np.ndarray
    sources: list[str]
    files: list[str]


def select_labelled(cfg: EvaluateConfig, columns: Columns | None = None) -> Labelled:
    """Read the labelled data (train's reader) and keep the rows --split names."""
    from ..training.data import load_labelled, make_split

    if not cfg.data:
        raise UserError("--data is required: labelled Parquet to evaluate on")
    files = expand_inputs(cfg.data)
    name, _, value = cfg.split.partition(":")[2].partition("=")
    split_column = name if cfg.split.startswith("column:") else None
    data = load_labelled(files, columns or Columns(), split_column=split_column, fingerprint=False)
    if cfg.split == "all":
        rows = np.arange(len(data))
    elif value:
        rows = np.array(
            [i for i, v in enumerate(data.split_values) if v is not None and str(v) == value], dtype=np.int64
        )
        if len(rows) == 0:
            raise UserError(f"--split {cfg.split}: no row has {name} == {value!r}")
    else:
        rows = make_split(data, cfg.split, cfg.val_fraction, cfg.seed, cfg.group_by)[1]
    ids = [data.ids[i] for i in rows]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise UserError(f"labelled data has duplicate ids ({', '.join(dupes[:3])}, ...): labels cannot be "
                        "joined to scores by id; de-duplicate or map --id-column to a unique column")
    return Labelled(ids=ids, labels=data.labels[rows], sources=[data.sources[i] for i in rows], files=files)


def read_scores(scores_dir: str, model_id: str | None = None) -> tuple[pa.Table, str, list[str], Conflicts]:
    """One model's scores, one row per article id, its model_id, notes, and the ids left out as ambiguous.
    The model and the row of each id are chosen by the rules `aggregate` applies (outlets.choose_model,
    outlets.first_rows), so both commands read the same articles."""
    from .aggregate import score_parts

    found_parts = score_parts(scores_dir)
    parts, inputs = [], []
    for f in found_parts.files:
        part = read_table(f, [ID, SOURCE, MODEL_ID, SCORED_AT, *PROB_COLUMNS])
        parts.append(part)
        inputs += [found_parts.inputs.get(f, f)] * part.num_rows
    table = pa.concat_tables(parts, promote_options="permissive")
    last: dict[str, object] = {}
    for m, at in zip(table[MODEL_ID].to_pylist(), table[SCORED_AT].to_pylist()):
        if m not in last or (at is not None and (last[m] is None or at > last[m])):
            last[m] = at
    wanted = model_id
    model_id, found = choose_model(last, wanted, where=f" under {scores_dir!r}", command="evaluate")
    notes: list[str] = []
    if wanted is None and len(found) > 1:
        notes.append(f"scores hold {len(found)} models; evaluated the most recently scored, {model_id} "
                     "(choose with --model-id)")
    mine = pc.equal(table[MODEL_ID], model_id)
    table = table.filter(mine)
    inputs = [path for path, keep in zip(inputs, mine.to_pylist()) if keep]
    rows, conflicts = first_rows(table, inputs)
    return table.take(pa.array(rows, pa.int64())), model_id, notes, conflicts


def quarantine_reasons(scores_dir: str, model_id: str, ids: set[str]) -> dict[str, int]:
    """Why the scorer set aside any of `ids` (from its quarantine table), counted by reason."""
    qdir = Layout(scores_dir, model_id).quarantine_dir()
    if not exists(qdir):
        return {}
    reasons: Counter = Counter()
    for url in expand_inputs([qdir]):
        q = read_table(url, [ID, REASON])
        for id_, reason in zip(q[ID].to_pylist(), q[REASON].to_pylist()):
            if id_ in ids:
                reasons[reason] += 1
    return dict(reasons)


def evaluate_scores(scores_dir: str, cfg: EvaluateConfig, columns: Columns | None = None,
                    labelled: Labelled | None = None, model_dir: str | None = None) -> dict:
    """Metrics of the scores under `scores_dir` against the labelled rows --split selects. `held_out` says
    whether those rows are unseen by the model (its directory: `model_dir`, else the score run's)."""
    labelled = labelled if labelled is not None else select_labelled(cfg, columns)
    table, model_id, notes, conflicts = read_scores(scores_dir, cfg.model_id)
    latest = {id_: i for i, id_ in enumerate(table[ID].to_pylist())}  # one row per id (read_scores)
    ambiguous = set(conflicts.ids)
    probs_all = np.stack([table[c].to_numpy(zero_copy_only=False) for c in PROB_COLUMNS], axis=1).astype(np.float64)
    keep = [i for i, id_ in enumerate(labelled.ids) if id_ in latest]
    if not keep:
        raise UserError(f"no scored article under {scores_dir!r} has an id in the labelled data; check that "
                        "both use the same --id-column and --split")
    unscored = {id_ for id_ in labelled.ids if id_ not in latest and id_ not in ambiguous}
    without_label = len(latest) - len(keep)
    probs = probs_all[[latest[labelled.ids[i]] for i in keep]]
    # A NaN, infinite or missing probability has no place in a metric: such rows are counted and left out.
    finite = np.isfinite(probs).all(axis=1)
    non_finite = int((~finite).sum())
    if non_finite == len(keep):
        raise UserError(f"every one of the {len(keep)} labelled article(s) scored under {scores_dir!r} has a NaN, "
                        "infinite or missing p_left/p_center/p_right; score them again with `score`")
    keep, probs = [i for i, ok in zip(keep, finite) if ok], probs[finite]
    y_true = labelled.labels[keep]
    sources = [labelled.sources[i] for i in keep]
    result = {
        "model_id": model_id, "split": cfg.split, "data": labelled.files, "labelled_rows": len(labelled.ids),
        "evaluated": len(keep), "unscored": len(unscored),
        "unscored_reasons": quarantine_reasons(scores_dir, model_id, unscored) if unscored else {},
        "scores_without_label": without_label, "non_finite_scores": non_finite,
        "conflicting_ids": len(conflicts.ids), "conflicting_rows": conflicts.rows,
        "articles": classification_report(y_true, probs),
        "outlets": {**outlet_agreement(sources, y_true, probs, cfg.min_articles),
                    "label_accuracy": _outlet_label_accuracy(sources, y_true, probs, cfg),
                    "label_threshold": cfg.label_threshold},
        "notes": notes,
    }
    if unscored:
        notes.append(f"{len(unscored)} labelled article(s) have no score (see unscored_reasons); "
                     "metrics cover the scored ones")
    if conflicts.ids:
        notes.append(f"{len(conflicts.ids)} article id(s) appear in several input files under different outlets "
                     f"({conflicts.rows} rows, e.g. {', '.join(conflicts.ids[:3])}) and were left out, as `aggregate` "
                     "leaves them out")
    if non_finite:
        notes.append(f"{non_finite} labelled article(s) have a NaN, infinite or missing probability in their "
                     "score (non_finite_scores): left out of the metrics")
    if without_label and cfg.split == "all":
        notes.append(f"{without_label} scored article(s) have an id that is not in the labelled data "
                     "(scores_without_label): left out of the metrics")
    model_dir = model_dir if model_dir is not None else _model_of_scores(scores_dir, model_id)
    result["outlets_seen_in_training"], result["held_out"] = _held_out(model_dir, cfg, labelled.files, sources, notes)
    return result


def _held_out(model_dir: str | None, cfg: EvaluateConfig, files: list[str], sources: list[str],
              notes: list[str]) -> tuple[dict | None, bool]:
    """The evaluated outlets the model trained on (outlets_in_training), and whether the evaluated rows are
    held out from it; where they are not, a note says why."""
    seen = seen_in_training(model_dir, cfg, files)
    overlap = outlets_in_training(model_dir, sources)
    if seen is None and overlap and overlap["outlets"]:
        seen = (f"not held out: {overlap['outlets']} of {overlap['of_outlets']} evaluated outlet(s) "
                f"({overlap['articles']} of {overlap['of_articles']} articles) were in the model's training data; "
                "these figures overstate how it does on unseen outlets (evaluate on outlets it never saw)")
    if seen:
        notes.append(seen)
    return overlap, seen is None


def outlets_in_training(model_dir: str | None, sources: list[str]) -> dict | None:
    """How many of the evaluated outlets (and their articles) the model was trained on, by source name
    (its training_outlets.json); None for a model directory without the file."""
    trained = read_training_outlets(model_dir)
    if trained is None:
        return None
    counts = Counter(sources)
    seen = [s for s in counts if s in trained.sources]
    return {"outlets": len(seen), "of_outlets": len(counts), "articles": sum(counts[s] for s in seen),
            "of_articles": len(sources)}


def _outlet_label_accuracy(sources: list[str], y_true: np.ndarray, probs: np.ndarray, cfg: EvaluateConfig) -> float:
    """How often `aggregate`'s outlet_label (mean bias score against ±T) names the outlet's own label,
    over outlets with at least min_articles articles."""
    score = probs[:, 2] - probs[:, 0]
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(s, []).append(i)
    hits = []
    for rows in groups.values():
        if len(rows) < cfg.min_articles:
            continue
        predicted = label_of(score[rows].mean(), fixed_thresholds(cfg.label_threshold))
        hits.append(predicted == np.bincount(y_true[rows], minlength=len(LABELS)).argmax())
    return float(np.mean(hits)) if hits else float("nan")


PROVENANCE_FILES = (TRAINING_RECIPE_FILE, METRICS_FILE)  # what seen_in_training reads


def seen_in_training(model_dir: str | None, cfg: EvaluateConfig, files: list[str]) -> str | None:
    """Why the evaluated rows are not held out from this model, from its training_recipe.json and
    metrics.json, or None: evaluated files that the model trained on, with --split all (every row), with
    another split than the model's validation split, or with train's validation split of a model refit on it
    (metrics.json's refit_on_validation). Files are compared by sha256, so a copy counts as the same data."""
    recipe_path = os.path.join(model_dir or "", TRAINING_RECIPE_FILE)
    if not model_dir or not os.path.isfile(recipe_path):
        return None
    recipe = read_model_json(recipe_path)
    trained = {f.get("sha256") for f in recipe.get("data_files", [])} - {None}
    if not trained or not any(file_fingerprint(f)["sha256"] in trained for f in files):
        return None
    train = recipe.get("config", {})
    metrics_path = os.path.join(model_dir, PROVENANCE_FILES[1])
    refit = os.path.isfile(metrics_path) and read_model_json(metrics_path).get("refit_on_validation")
    if cfg.split == "all":
        why = "--split all evaluates every row of data the model was trained on"
    elif any(train.get(k) != getattr(cfg, k) for k in ("split", "seed", "val_fraction", "group_by")):
        why = (f"--split {cfg.split} (seed {cfg.seed}, val_fraction {cfg.val_fraction}, group_by {cfg.group_by}) "
               f"is not the model's validation split (split {train.get('split')}, seed {train.get('seed')}, "
               f"val_fraction {train.get('val_fraction')}, group_by {train.get('group_by')}), so it holds "
               "training rows")
    elif refit:
        why = (f"the {train.get('kind')} model was refit on its training and validation rows (--linear-refit), so "
               f"--split {cfg.split} rows were seen in training")
    else:
        return None
    return (f"not held out: {why}; these figures overstate how it does on unseen outlets (use train --test, cv, "
            "or articles from outlets it never saw)")


def _model_of_scores(scores_dir: str, model_id: str) -> str | None:
    """The model directory a score run with this model id named in its run summary, if any."""
    import glob

    for path in sorted(glob.glob(run_summary(scores_dir, "*")), reverse=True):
        try:
            summary = read_json(path)
        except (OSError, ValueError):
            continue
        if summary.get("model_id") == model_id:
            return summary.get("model_dir") or summary.get("config", {}).get("model")
    return None


def evaluate_model(score_cfg: ScoreConfig, cfg: EvaluateConfig) -> dict:
    """Score the labelled rows --split selects with `score_corpus` into a temporary directory, then
    evaluate those scores. Returns the same dict as evaluate_scores, plus the scoring summary."""
    from ..scoring import score_corpus

    if not score_cfg.model:
        raise UserError("give --model (a model directory to score with) or --scores (scores already written)")
    labelled = select_labelled(cfg, score_cfg.columns)
    for name in PROVENANCE_FILES:  # read after scoring (seen_in_training): a damaged one is refused now
        if os.path.isfile(os.path.join(score_cfg.model, name)):
            read_model_json(os.path.join(score_cfg.model, name))
    with tempfile.TemporaryDirectory(prefix="allsides-evaluate-") as tmp:
        inputs = labelled.files if cfg.split == "all" else [_write_subset(labelled, score_cfg.columns, tmp)]
        run = dataclasses.replace(score_cfg, input=inputs, output=os.path.join(tmp, "out"), run_id=None)
        summary = score_corpus(run)
        result = evaluate_scores(run.output, dataclasses.replace(cfg, model_id=summary.model_id),
                                 score_cfg.columns, labelled=labelled, model_dir=score_cfg.model)
    result["model"] = score_cfg.model
    result["scoring"] = {k: summary.to_dict()[k] for k in ("input_rows", "scored_rows", "quarantined_rows",
                                                           "max_length", "seconds", "articles_per_s", "devices")}
    return result


def _write_subset(labelled: Labelled, columns: Columns, tmp: str) -> str:
    """The chosen rows of the labelled files, with the columns the scorer reads, as one Parquet file."""
    wanted = [c for c in (columns.id, columns.source, columns.text, columns.title, columns.date, columns.url,
                          SOURCE_URL) if c]
    keep = pa.array(labelled.ids, pa.string())
    parts = []
    for url in labelled.files:
        names = schema_names(url)
        table = read_table(url, [c for c in dict.fromkeys(wanted) if c in names])
        parts.append(table.filter(pc.is_in(table[columns.id].cast(pa.string()), value_set=keep)))
    path = os.path.join(tmp, "evaluate-input.parquet")
    pq.write_table(pa.concat_tables(parts, promote_options="permissive"), path)
    return path


# ------------------------------------------------------------------------------------------------ output

def markdown_report(result: dict) -> str:
    """Metric table, per-class table and confusion matrix in markdown."""
    a, o = result["articles"], result["outlets"]
    lines = [f"### Evaluation of model {result['model_id']} on {result['evaluated']} articles "
             f"(split: {result['split']})",
             "", "| metric | value |", "| --- | ---: |",
             f"| accuracy | {a['accuracy']:.3f} |", f"| macro-F1 | {a['macro_f1']:.3f} |",
             f"| expected calibration error (15 bins) | {a['ece']:.3f} |", f"| log loss | {a['log_loss']:.3f} |",
             (f"| outlet Spearman: mean bias score vs. label ({o['outlets']} outlets, ≥ {o['min_articles']} "
              f"articles) | {o['spearman']:.3f} |"),
             f"| outlet accuracy: majority predicted label | {o['outlet_accuracy']:.3f} |",
             f"| outlet accuracy: mean score vs. ±{o['label_threshold']:.2f} | {o['label_accuracy']:.3f} |",
             "", "| class | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, c in a["per_class"].items():
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    lines += ["", "Confusion matrix (rows: true label, columns: predicted):", "",
              "| | " + " | ".join(LABELS) + " |", "| --- |" + " ---: |" * len(LABELS)]
    for name, row in zip(LABELS, a["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    if result["unscored"]:
        lines += ["", f"{result['unscored']} labelled article(s) had no score: {result['unscored_reasons']}."]
    if result.get("non_finite_scores"):
        lines += ["", f"{result['non_finite_scores']} labelled article(s) had a NaN, infinite or missing "
                      "probability: left out."]
    return "\n".join(lines) + "\n"


def write_evaluation(result: dict, output_dir: str) -> tuple[str, str]:
    """evaluation.json and evaluation.md under output_dir."""
    check_output_dir(output_dir)
    return (write_json(join(output_dir, "evaluation.json"), result),
            atomic_write_text(join(output_dir, "evaluation.md"), markdown_report(result)))
