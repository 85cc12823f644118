"""The layout's rules: what may import what, where errors live, one list of steps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def files_of(*parts: str) -> list[Path]:
    target = ROOT.joinpath("recs", *parts)
    return sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]


@pytest.mark.parametrize("stage", ["score", "evaluate", "pipeline"])
def test_serving_stages_never_import_the_trainer(stage):
    for path in files_of(stage):
        bad = sorted(m for m in imported_modules(path) if m == "recs.train" or m.startswith("recs.train."))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_model_layer_does_not_depend_on_training():
    for path in files_of("model"):
        bad = sorted(m for m in imported_modules(path) if m.startswith("recs.train"))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_errors_is_a_leaf_and_every_error_class_lives_there():
    assert not [m for m in imported_modules(ROOT / "recs" / "errors.py") if m.startswith("recs")]
    elsewhere = []
    for path in sorted((ROOT / "recs").rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id == "StepSkipped")
                for b in node.bases
            ):
                elsewhere.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert not elsewhere


def test_the_cli_the_jobs_the_wrapper_and_the_dag_run_the_same_steps():
    from recs.cli import STEP_CHOICE
    from recs.pipeline import STEP_MODULES, STEPS, step_function

    assert STEPS == ("ingest", "features", "train", "score", "evaluate")
    assert tuple(STEP_CHOICE.choices) == STEPS
    assert all(callable(step_function(s)) and s in STEP_MODULES[s] for s in STEPS)
    jobs = {p.stem for p in (ROOT / "jobs").glob("[a-z]*.py")}
    assert jobs == {*STEPS, "nightly"}  # deploy/spark-submit.sh accepts exactly these
    dag = ast.parse((ROOT / "deploy" / "airflow" / "recs_dag.py").read_text())
    (dag_steps,) = [
        ast.literal_eval(n.value)
        for n in dag.body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "STEPS" for t in n.targets)
    ]
    assert tuple(dag_steps) == STEPS


def test_interactions_are_item_event_types():
    from recs.schemas import interaction_events, raw_doc

    assert set(interaction_events()) <= set(raw_doc("events")["event_types"]["item"])
    assert "impression" not in interaction_events()


def test_every_package_under_recs_is_installed_by_a_non_editable_install():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "recs").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


def test_only_score_and_train_run_python_on_executors():
    """deploy/spark-submit.sh ships the environment to executors only for the steps that run
    Python there; a Python UDF anywhere else would fail on nodes without it."""
    executor_python = {
        *("mapInArrow", "mapInPandas", "applyInPandas", "applyInArrow", "pandas_udf", "udf", "udtf"),
        *("foreach", "foreachPartition", "mapPartitions", "TorchDistributor"),
    }
    users: set[str] = set()
    for path in files_of(""):
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if isinstance(node, ast.alias):
                name = node.name
            if name in executor_python:
                users.add(path.relative_to(ROOT / "recs").parts[0])
    assert users <= {"score", "train"}, users
    text = (ROOT / "deploy" / "spark-submit.sh").read_text()
    assert '" ingest features evaluate "' in text
