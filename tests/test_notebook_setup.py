"""cxr_utils.notebook.setup: TensorFlow's start-up chatter stays out of the lessons' saved outputs."""

from __future__ import annotations

import os
import subprocess
import sys


def test_setup_imports_tensorflow_without_writing_to_stderr() -> None:
    code = "import cxr_utils.notebook as n; n.setup(); import sys; print('tensorflow' in sys.modules)"
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "True"
    assert quiet.stderr == "", quiet.stderr


def test_setup_silences_what_a_library_writes_to_file_descriptor_2_while_it_loads(tmp_path) -> None:
    """TensorFlow's C++ libraries write to fd 2 before any logging setting applies; a module doing the
    same shows that setup() silences the descriptor itself, on any machine (and that a plain import does not)."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("import os\nos.write(2, b'Could not find cuda drivers on your machine\\n')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    loud = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert "Could not find cuda drivers" in loud.stderr
    code = "import cxr_utils.notebook as n; n.setup(); print('done')"
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
