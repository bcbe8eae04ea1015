"""cxr_utils.notebook.setup: TensorFlow's start-up chatter stays out of the lessons' saved outputs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]


def test_setup_leaves_tensorflow_unimported_and_its_later_import_writes_nothing_to_stderr() -> None:
    """Keras imports TensorFlow, as a lesson's first cell that needs it does."""
    code = ("import sys, cxr_utils.notebook as n; n.setup(); before = 'tensorflow' in sys.modules; import keras; "
            "print(before, 'tensorflow' in sys.modules)")
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "False True"
    assert quiet.stderr == "", quiet.stderr


def test_a_lesson_that_never_needs_tensorflow_never_imports_it() -> None:
    """Every import lesson 01's cells make (at their top level): setup must not spend the seconds of TensorFlow's
    import on a lesson that has no use for it."""
    nb = nbformat.read(REPO / "notebooks" / "01_data_curation.ipynb", as_version=4)
    imports = [ast.unparse(node) for cell in nb.cells if cell.cell_type == "code"
               for node in ast.parse(cell.source).body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert any("curation" in line for line in imports), imports  # the lesson's own modules are among them
    code = "\n".join(["import sys, cxr_utils.notebook as n", "n.setup()", *imports,
                      "print('tensorflow' in sys.modules)"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=REPO / "notebooks")
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_setup_silences_what_a_library_writes_to_file_descriptor_2_while_it_loads(tmp_path) -> None:
    """TensorFlow's C++ libraries write to fd 2 before any logging setting applies; a module doing the
    same shows that its import after setup() (and import_tensorflow_quietly, which cxr-predict uses) silences the
    descriptor itself, on any machine (and that a plain import does not)."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("import os\nos.write(2, b'Could not find cuda drivers on your machine\\n')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    loud = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert "Could not find cuda drivers" in loud.stderr
    for code in ("import cxr_utils.notebook as n; n.setup(); import tensorflow; print('done')",
                 "import cxr_utils.notebook as n; n.import_tensorflow_quietly(); print('done')"):
        quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert quiet.returncode == 0 and quiet.stdout.strip() == "done", quiet.stderr
        assert "cuda" not in quiet.stderr, quiet.stderr


def test_setup_sets_modest_figure_dpi(tmp_path) -> None:
    (tmp_path / "tensorflow").mkdir()  # an empty stand-in: this test is about matplotlib, not TensorFlow's start-up
    (tmp_path / "tensorflow" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = ("import cxr_utils.notebook as n; n.setup(dpi=72); import matplotlib.pyplot as p; "
            "print(p.rcParams['figure.dpi'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "72.0", out.stderr
