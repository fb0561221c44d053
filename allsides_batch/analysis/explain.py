"""Why an article or an outlet sits where it does: the exact term contributions of a linear model.

A linear model's bias logit, logit_right − logit_left, is a sum over the article's TF-IDF features:
sum_v x_v · (coef_right,v − coef_left,v), plus the intercept difference. Each term's share is exact, not an
approximation, and the scorer's probabilities give the same number back: log(p_right / p_left) · T
(T the saved temperature, 1 without one). An outlet's contributions are its articles' summed (and
averaged per article), so its top terms say which words carry it left or right; a model keyed on
boilerplate or outlet names shows it here first.

For an ensemble the linear half is explained (its share of the ensemble's score is its fitted weight). A
transformer has no exact decomposition; gradient-times-input or integrated gradients over its tokens would
be the place to start, and are not offered here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..models.linear import LinearModel
from ..text.prep import TextPrep, prepare_text


@dataclass
class LinearExplainer:
    model: LinearModel
    prep: TextPrep
    temperature: float
    member: str | None  # "linear" for an ensemble's linear half

    @property
    def intercept(self) -> float:
        return self.model.bias_intercept()

    def contributions(self, titles, texts, sources):
        """((N, V) sparse per-article term contributions to the bias logit, (N,) bias logits)."""
        import scipy.sparse as sp

        prepared = [prepare_text(t, x, self.prep, source=s) for t, x, s in zip(titles, texts, sources)]
        x = sp.csr_matrix(self.model.features(prepared), dtype=np.float64)
        contrib = x.multiply(self.model.bias_weights()[None, :]).tocsr()
        return contrib, np.asarray(contrib.sum(axis=1)).ravel() + self.intercept

    def top_terms(self, row: np.ndarray, top: int) -> dict:
        """The `top` terms pushing right (largest positive) and left (most negative) in a (V,) row of
        contributions; a term that pushes the other way, or not at all, is never listed."""
        order = np.argsort(row, kind="stable")
        vocab = self.model.vocabulary

        def pick(idx):
            return [{"term": vocab[i], "contribution": round(float(row[i]), 6)} for i in idx]

        return {"right": pick([i for i in order[::-1][:top] if row[i] > 0]),
                "left": pick([i for i in order[:top] if row[i] < 0])}


def load_explainer(model_dir: str) -> LinearExplainer:
    """The linear model of a linear model directory, or the linear half of an ensemble."""
    from ..models.calibration import load_temperature
    from ..models.identity import read_model_kind

    if not os.path.isdir(model_dir):
        raise UserError(f"--model {model_dir!r}: no such directory; give a model directory that `train` wrote")
    kind = read_model_kind(model_dir)["kind"]
    if kind == "linear":
        linear_dir, member = model_dir, None
    elif kind == "ensemble":
        linear_dir, member = os.path.join(model_dir, "linear"), "linear"
    else:
        raise UserError(f"{model_dir!r} is a {kind} model: explain decomposes linear models (and an ensemble's "
                        "linear half) exactly; a transformer has no such decomposition")
    return LinearExplainer(model=LinearModel.load(linear_dir), prep=TextPrep.load(model_dir),
                           temperature=load_temperature(linear_dir), member=member)


def explain_rows(explainer: LinearExplainer, rows: list[dict], top: int = 15) -> dict:
    """One article (one row) or one outlet (its rows, summed): its bias logit, the intercept and the top
    terms each way, with the per-article mean contribution for an outlet."""
    if not rows:
        raise UserError("no articles to explain")
    contrib, logits = explainer.contributions([r.get("title") for r in rows], [r.get("text") or "" for r in rows],
                                              [r.get("source") for r in rows])
    total = np.asarray(contrib.sum(axis=0)).ravel() / len(rows)  # mean per article
    terms = explainer.top_terms(total, top)
    return {"articles": len(rows), "mean_bias_logit": float(logits.mean()), "intercept": explainer.intercept,
            "terms_sum": float(total.sum()), "temperature": explainer.temperature,
            "member": explainer.member, "ids": [r.get("id") for r in rows][:20],
            "push_right": terms["right"], "push_left": terms["left"]}


def read_rows(inputs: list[str], *, article_id: str | None = None, outlet: str | None = None,
              id_column: str = "id", source_column: str = "source", text_column: str = "text",
              title_column: str = "title") -> list[dict]:
    """The rows of `inputs` (Parquet) with that id, or from that outlet (source name)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..storage.io import expand_inputs

    if (article_id is None) == (outlet is None):
        raise UserError("give exactly one of --id (one article) or --outlet (every article of a source)")
    out: list[dict] = []
    for url in expand_inputs(inputs):
        schema = pq.read_schema(url)
        missing = [c for c in (id_column, source_column, text_column) if c not in schema.names]
        if missing:
            raise UserError(f"{url}: no column(s) {', '.join(missing)}; explain reads id, source, title and text")
        columns = [c for c in (id_column, source_column, title_column, text_column) if c in schema.names]
        key, value = (id_column, article_id) if article_id is not None else (source_column, outlet)
        table = pq.read_table(url, columns=columns)
        table = table.filter(pc.equal(pc.cast(table[key], "string"), value))
        for r in table.to_pylist():
            out.append({"id": r.get(id_column), "source": r.get(source_column), "title": r.get(title_column),
                        "text": r.get(text_column)})
    if not out:
        what = f"id {article_id!r}" if article_id is not None else f"outlet {outlet!r}"
        raise UserError(f"no article with {what} in {', '.join(inputs)}")
    return out


def markdown(result: dict, what: str) -> str:
    """A readable table of explain_rows' result (for stderr and the night's report)."""
    def cell(item: dict | None) -> str:
        return f"{item['term']} | {item['contribution']:+.4f}" if item else " | "

    lines = [f"{what}: {result['articles']} article(s), mean bias logit {result['mean_bias_logit']:+.3f} "
             f"(intercept {result['intercept']:+.3f} + terms {result['terms_sum']:+.3f}, per article)"
             + (" [the ensemble's linear half]" if result["member"] else ""),
             "", "| pushes right | contribution | pushes left | contribution |", "| --- | ---: | --- | ---: |"]
    right, left = result["push_right"], result["push_left"]
    for i in range(max(len(right), len(left))):
        lines.append(f"| {cell(right[i] if i < len(right) else None)} | {cell(left[i] if i < len(left) else None)} |")
    return "\n".join(lines) + "\n"


def outlet_terms(model_dir: str, inputs: list[str], outlets: list[str], top: int = 10,
                 max_articles: int = 500) -> dict[str, dict]:
    """explain_rows for each of `outlets` over its articles in `inputs` (at most `max_articles` each, the
    first ones read), reading the files once."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..storage.io import expand_inputs

    explainer = load_explainer(model_dir)
    wanted, rows = pa.array(sorted(set(outlets)), pa.string()), {o: [] for o in outlets}
    for url in expand_inputs(inputs):
        names = pq.read_schema(url).names
        if not {"source", "text"} <= set(names):
            continue
        table = pq.read_table(url, columns=[c for c in ("id", "source", "title", "text") if c in names])
        table = table.filter(pc.is_in(pc.cast(table["source"], "string"), value_set=wanted))
        for r in table.to_pylist():
            if len(rows[r["source"]]) < max_articles:
                rows[r["source"]].append(r)
    return {o: explain_rows(explainer, rows[o], top) for o in outlets if rows[o]}


def write_outlet_terms(aggregates_dir: str, output_dir: str, model_dir: str, inputs: list[str], top: int = 6
                       ) -> str | None:
    """REPORT_TERMS under `output_dir`: why the `top` largest outlets of the aggregates sit where they do, from
    their articles in `inputs`. None for a model explain cannot decompose (a transformer) or no such article."""
    import polars as pl

    from ..models.identity import read_model_kind
    from ..storage.io import atomic_write_text, join
    from ..storage.layout import REPORT_TERMS
    from .report import available_windows, read_aggregates

    if read_model_kind(model_dir)["kind"] not in ("linear", "ensemble"):
        return None
    frame = read_aggregates(aggregates_dir, available_windows(aggregates_dir)[0])
    totals = frame.group_by("outlet").agg(pl.col("n_articles").sum().alias("n"))
    outlets = totals.sort(["n", "outlet"], descending=[True, False])["outlet"].head(top).to_list()
    terms = outlet_terms(model_dir, inputs, outlets) if outlets else {}
    if not terms:
        return None
    os.makedirs(output_dir, exist_ok=True)
    return atomic_write_text(join(output_dir, REPORT_TERMS), outlet_terms_markdown(terms, model_dir))


def outlet_terms_markdown(terms: dict[str, dict], model_dir: str) -> str:
    lines = ["# Why each outlet sits where it does", "",
             f"The n-grams that contribute most to each outlet's position, summed over its articles and averaged "
             f"per article (exact contributions to the bias logit of the linear model in `{model_dir}`; "
             "`allsides-batch explain --outlet NAME` for any other outlet).", ""]
    for outlet, result in terms.items():
        lines += [markdown(result, f"## {outlet}"), ""]
    return "\n".join(lines)
