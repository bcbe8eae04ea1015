"""What every lesson does first, outside Colab as on it: quiet TensorFlow, modest figure sizes.

The generated ``setup`` cell of each lesson calls :func:`setup`; nothing here installs, downloads
or writes files.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    TensorFlow's C++ libraries print "Could not find cuda drivers ..." and similar lines while they
    load, before any logging setting applies (``TF_CPP_MIN_LOG_LEVEL`` silences only later messages).
    In a notebook those lines land in the saved outputs. Errors still raise as usual.
    """
    if "tensorflow" in sys.modules:
        return
    try:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no real file descriptor 2 (some embedded interpreters): import normally
        import tensorflow  # noqa: F401

        return
    os.dup2(null, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def setup(dpi: int = 80) -> None:
    """Prepare a lesson: TensorFlow's C++ logging off, TensorFlow imported quietly, figures at ``dpi``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import_tensorflow_quietly()
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi})
