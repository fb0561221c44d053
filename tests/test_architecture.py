"""The package's shape: data flows down the tree (no import cycle, no module importing a layer above its
own), the flows included; the scoring package stays free of polars and prefect; output and model-file
names each have one owner; and scores of fixed models on fixed data are those the code gave before the
package was reorganised."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

PKG = Path(__file__).resolve().parents[1] / "allsides_batch"
GOLDEN = Path(__file__).parent / "data" / "scores_before_restructure.json"

# The layers, bottom to top: a module imports modules of its own layer and below, never above. The
# foundations are the top-level modules every stage shares, storage/, runtime/ and models/files.py (the
# names and readers of a model directory's files, which text/prep.py uses for its own file); the CLI's
# helpers (cli.py) and its commands are one layer, under __main__.
LAYERS = (
    {"allsides_batch", "errors", "config", "fields", "metrics", "outlets", "schema", "storage", "runtime",
     "models.files"},
    {"text"},
    {"models"},
    {"training"},
    {"scoring"},
    {"analysis"},
    {"flows"},
    {"commands", "cli"},
    {"__main__"},
)

def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> package modules it imports (at module level or inside functions)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)]
                    target = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found |= {c for c in candidates if c in modules and c != name}
        graph[name] = found
    return graph


def test_no_import_cycle():
    graph = import_graph()
    # the package's __init__ files re-export their own modules: an edge package -> its module is not a cycle
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def layer_of(module: str) -> int:
    """The module's layer (an index into LAYERS): its own entry (models.files), else its subpackage's or its
    own name's. A module in no layer fails: a new subpackage or top-level module takes its place here."""
    parts = module.split(".")[1:]
    for key in (".".join(parts[:2]), parts[0] if parts else "allsides_batch"):
        found = [i for i, layer in enumerate(LAYERS) if key in layer]
        if found:
            return found[0]
    raise AssertionError(f"{module} is in no layer of LAYERS")


def test_data_flows_down_the_tree():
    graph = import_graph()
    wrong = [f"{module} -> {target}" for module, targets in sorted(graph.items()) for target in sorted(targets)
             if layer_of(target) > layer_of(module)]
    assert wrong == [], wrong


def test_the_graph_covers_the_whole_installable_tree():
    """The flows are part of the package (no second top-level package beside it), and the architecture
    tests see them."""
    import tomllib

    graph = import_graph()
    assert "allsides_batch.flows.score_corpus" in graph and "allsides_batch.flows.__main__" in graph
    find = tomllib.loads((PKG.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["allsides_batch*"]

@pytest.mark.slow
def test_scoring_package_imports_neither_polars_nor_prefect():
    code = ("import sys, allsides_batch.scoring, allsides_batch.scoring.engine, allsides_batch.storage.corpus; "
            "print(sorted(m for m in ('polars', 'prefect') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_scores_are_those_of_the_code_before_the_reorganisation(tiny_model_dir, articles_sample, tmp_path):
    """Two fixed models (the seeded tiny DistilBERT, truncating and in chunk mode, and a linear model
    trained on the fixed sample) score the fixed sample exactly as the flat-package code did
    (tests/data/scores_before_restructure.json, written by that code)."""
    from allsides_batch.config import ScoreConfig, TrainConfig
    from allsides_batch.scoring import score_corpus
    from allsides_batch.training.train import train_model

    golden = json.loads(GOLDEN.read_text())
    linear = tmp_path / "linear"
    # the linear model as the flat package trained it (class and outlet weights and C = 2 came later)
    train_model(TrainConfig(kind="linear", data=[str(articles_sample)], output=str(linear), linear_class_weight="none",
                            linear_outlet_weight=0.0, linear_c=1.0))
    runs = {"tiny-transformer-64": (tiny_model_dir, dict(max_length=64)),
            "tiny-transformer-chunk": (tiny_model_dir, dict(max_length=64, long_text="chunk", stride=16)),
            "linear": (str(linear), {})}
    for name, (model, extra) in runs.items():
        s = score_corpus(ScoreConfig(model=model, input=[str(articles_sample)], output=str(tmp_path / name),
                                     progress=False, device="cpu", workers=0, **extra))
        t = pq.read_table(s.parts[0]).sort_by("id")
        probs = np.stack([t[c].to_numpy() for c in ("p_left", "p_center", "p_right")], 1)
        assert t["id"].to_pylist() == golden[name]["ids"], name
        assert t["n_tokens"].to_pylist() == golden[name]["n_tokens"], name
        assert t["truncated"].to_pylist() == golden[name]["truncated"], name
        np.testing.assert_allclose(probs, np.asarray(golden[name]["probs"]), atol=2e-6, err_msg=name)


LAYOUT_NAMES = ("_manifest", "part-0.parquet", "_summary.json")


def _string_literals(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_output_names_are_spelled_only_in_layout():
    """The output layout's file and directory names are layout.py's: no other module of the package or
    of the flows spells them in a string (they use layout's constants and path functions)."""
    layout = PKG / "storage" / "layout.py"
    assert all(any(name in s for _, s in _string_literals(layout)) for name in LAYOUT_NAMES)
    found = []
    for path in sorted(PKG.rglob("*.py")):
        if path != layout:
            found += [f"{path.relative_to(PKG.parent)}:{line}: {name}"
                      for line, s in _string_literals(path) for name in LAYOUT_NAMES if name in s]
    assert found == [], found



MODEL_FILES = PKG / "models" / "files.py"


def _model_file_names() -> set[str]:
    """Every file name models/files.py defines (its *_FILE and *_FILES constants)."""
    names = set()
    for node in ast.parse(MODEL_FILES.read_text()).body:
        if isinstance(node, ast.Assign) and any(t.id.endswith(("_FILE", "_FILES")) for t in node.targets):
            names |= {n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return names


def _code_literals(path: Path) -> list[tuple[int, str]]:
    """The string literals of a module that are not docstrings (prose may name a file)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]


def test_model_file_names_are_spelled_only_in_models_files():
    """A model directory's file names are models/files.py's: no other module spells one as a file name or
    path in code (messages may mention them in prose; paths are built from the constants)."""
    names = _model_file_names()
    assert {"config.json", "model.safetensors", "linear.safetensors", "training_recipe.json", "metrics.json",
            "allsides_model.json", "calibration.json", "text_preparation.json", "vectorizer.json"} <= names
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).as_posix()
        if path != MODEL_FILES:
            found += [f"{rel}:{line}: {s}" for line, s in _code_literals(path)
                      if any(part in names for part in s.split("/"))]
    assert found == [], found


# The score and quarantine column names that only schema.py spells. Generic names that are also config
# fields, JSON keys or words in messages (id, source, date, label, text, title, url, model_id, run_id,
# reason) are left out: a literal "id" says nothing about where a column name is owned.
SCORE_COLUMN_NAMES = ("p_left", "p_center", "p_right", "bias_score", "confidence", "n_tokens", "truncated",
                      "scored_at", "source_url", "input_file", "row_index")


def test_score_column_names_are_spelled_only_in_schema():
    """The score and quarantine columns p_left, p_center, p_right, bias_score, confidence, n_tokens, truncated,
    scored_at, source_url, input_file and row_index are named only in schema.py: no other module of the
    package has a string literal equal to one of them; they import schema's constants. Messages and docstrings
    that mention a name are not policed (a literal must equal the name)."""
    schema = PKG / "schema.py"
    assert all(any(s == name for _, s in _string_literals(schema)) for name in SCORE_COLUMN_NAMES)
    found = []
    for path in sorted(PKG.rglob("*.py")):
        if path == schema:
            continue
        found += [f"{path.relative_to(PKG.parent)}:{line}: {s}" for line, s in _string_literals(path)
                  if s in SCORE_COLUMN_NAMES]
    assert found == [], found


def _flow_function(entrypoint: str) -> ast.FunctionDef:
    path, name = entrypoint.split(":")
    tree = ast.parse((PKG.parent / path).read_text())
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_deployment_parameters_are_flow_parameters():
    """deploy/prefect.yaml sets only parameters its flows take: a renamed or dropped one fails here, not
    when the deployment runs."""
    import yaml

    spec = yaml.safe_load((PKG.parent / "deploy" / "prefect.yaml").read_text())
    wrong = []
    for d in spec["deployments"]:
        fn = _flow_function(d["entrypoint"])
        taken = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
        wrong += [f"{d['name']}: {p}" for p in d.get("parameters") or {} if p not in taken]
    assert wrong == [], wrong


def test_train_flow_restates_no_train_config_default():
    """train-model's parameters that are TrainConfig fields default to None (TrainConfig's own default);
    `data` is the flow's corpus, not a recipe default."""
    import dataclasses

    from allsides_batch.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"data"}
    fn = _flow_function("allsides_batch/flows/train_model.py:train_model_flow")
    args = fn.args.args
    defaults = dict(zip([a.arg for a in args[len(args) - len(fn.args.defaults):]], fn.args.defaults))
    restated = [name for name, d in defaults.items()
                if name in fields and not (isinstance(d, ast.Constant) and d.value is None)]
    assert restated == [], restated
