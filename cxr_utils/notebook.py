"""What every lesson does first, outside Colab as on it: quiet TensorFlow, modest figure sizes.

The generated ``setup`` cell of each lesson calls :func:`setup`; nothing here installs, downloads
or writes files.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _fd2_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the ``with`` block (nothing happens without a real fd 2)."""
    try:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no real file descriptor 2 (some embedded interpreters)
        yield
        return
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    TensorFlow's C++ libraries print "Could not find cuda drivers ..." and similar lines while they
    load, before any logging setting applies (``TF_CPP_MIN_LOG_LEVEL`` silences only later messages).
    In a notebook those lines land in the saved outputs. Errors still raise as usual.
    """
    if "tensorflow" in sys.modules:
        return
    with _fd2_silenced():
        import tensorflow  # noqa: F401


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's package body with fd 2 silenced, then steps aside for the real loader."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__spec__.loader = module.__loader__ = self.loader  # what TensorFlow sees while it loads
        with _fd2_silenced():
            self.loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: the first time ``tensorflow`` is imported (directly, or by Keras or the course's
    modules), it removes itself and has the usual finders find it, with :class:`_QuietLoader` in front."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_when_imported() -> None:
    """Make the first import of TensorFlow in this process quiet (as :func:`import_tensorflow_quietly`), whenever
    and wherever it happens, without importing it now: a lesson that never uses TensorFlow (lesson 01) does not
    wait the seconds its import takes."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


def setup(dpi: int = 80) -> None:
    """Prepare a lesson: TensorFlow's C++ logging off and its first import quiet, figures at ``dpi``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    quiet_tensorflow_when_imported()
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi})
