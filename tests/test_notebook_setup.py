"""cxr_utils.notebook.setup: TensorFlow's start-up chatter stays out of the lessons' saved outputs."""

from __future__ import annotations

import subprocess
import sys


def test_setup_imports_tensorflow_without_writing_to_stderr() -> None:
    code = "import cxr_utils.notebook as n; n.setup(); import sys; print('tensorflow' in sys.modules)"
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "True"
    assert quiet.stderr == "", quiet.stderr
    # ... whereas a plain import on this GPU-less machine does print C++ start-up lines,
    # so the test above can fail.
    loud = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert loud.returncode == 0
    assert loud.stderr != ""


def test_setup_sets_modest_figure_dpi() -> None:
    code = ("import cxr_utils.notebook as n; n.setup(dpi=72); import matplotlib.pyplot as p; "
            "print(p.rcParams['figure.dpi'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "72.0", out.stderr
