"""The package's shape: each module named in its face, no import cycles, evaluation independent of training,
and each idea written once (one atomic writer, one pixel scaling, one definition of each shared constant)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import cxr_utils

PACKAGE = Path(cxr_utils.__file__).resolve().parent
REPO = PACKAGE.parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
EVALUATION = ("predictions", "metrics", "evaluate", "compare", "external", "runs", "plots", "preprocess")


def imports_of(module: str) -> set[str]:
    """The cxr_utils modules ``module`` imports, at module level or inside functions (type-checking-only imports,
    which run at no time, excepted)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cxr_utils"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from cxr_utils import a, b
                found |= {alias.name for alias in node.names if alias.name in MODULES}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cxr_utils.")}
    return found - {module}


GRAPH = {m: imports_of(m) for m in MODULES}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_package_docstring_names_every_module_and_only_those():
    named = set(re.findall(r"^\s+``(\w+)``\s", cxr_utils.__doc__, flags=re.M))
    assert named == set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_itself_through_others(module):
    assert module not in reachable(module), f"{module} is part of an import cycle"


def test_a_cycle_would_be_found():
    GRAPH["_a"], GRAPH["_b"] = {"_b"}, {"_a"}
    try:
        assert "_a" in reachable("_a")
    finally:
        del GRAPH["_a"], GRAPH["_b"]


@pytest.mark.parametrize("module", EVALUATION)
def test_evaluation_never_imports_training(module):
    assert "train" not in reachable(module), f"{module} imports cxr_utils.train (directly or through another module)"


def _code_files() -> list[Path]:
    return [*PACKAGE.glob("*.py"), *(REPO / "tools").glob("*.py")]


def test_files_are_only_renamed_into_place_by_the_atomic_module():
    rename = re.compile(r"os\.replace\(|os\.rename\(|shutil\.move\(|\.rename\((?!columns|index)")
    offenders = [p.name for p in _code_files() if p.name != "atomic.py" and rename.search(p.read_text())]
    assert offenders == []


def test_pixels_become_zero_to_one_in_one_place():
    pattern = re.compile(r"/\s*255|convert_image_dtype|\*\s*\(?1\s*/\s*255")
    offenders = [p.name for p in _code_files() if p.name != "preprocess.py" and pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("name", ["PREDICTION_COLUMNS", "PROB_COLUMNS", "LABEL_SMOOTHING", "CLASSES", "RESULT_FILES"])
def test_each_shared_constant_is_assigned_in_one_module(name):
    assigned = [p.name for p in PACKAGE.glob("*.py")
                if re.search(rf"^{name}\b[^=\n]*=", p.read_text(), flags=re.M)]
    assert len(assigned) == 1, (name, assigned)


@pytest.mark.parametrize("name", ["label_indices", "confusion_matrix", "predict_split", "is_complete", "scale",
                                  "write_csv", "find_run"])
def test_each_shared_function_is_defined_in_one_module(name):
    defined = [p.name for p in PACKAGE.glob("*.py") if re.search(rf"^def {name}\(", p.read_text(), flags=re.M)]
    assert len(defined) == 1, (name, defined)


def test_under_two_workers_lessons_checks_and_lesson_08_solutions_share_a_worker_as_do_the_tiny_run_users():
    import conftest

    assert conftest.group_of("notebooks/06_training.ipynb::Cell 5") == "lessons"
    assert conftest.group_of("tests/test_lessons.py::test_lesson_06_trains_both_recipes") == "lessons"
    assert conftest.group_of("notebooks/solutions/08_what_the_model_learned_solutions.ipynb::Cell 2") == "lessons"
    assert conftest.group_of("notebooks/solutions/06_training_solutions.ipynb::Cell 2") not in (
        "lessons", conftest.group_of("notebooks/solutions/05_lr_schedules_solutions.ipynb::Cell 2"))
    assert conftest.group_of("tests/test_train.py::test_x") == conftest.group_of("tests/test_tensorboard.py::t")
    assert conftest.group_of("tests/test_data.py::test_a") == "tests/test_data.py" != conftest.group_of(
        "tests/test_images.py::test_b")
