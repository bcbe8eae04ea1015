"""Test-session settings that hold however pytest is invoked.

``python3 tools/course.py test``, ``pytest``, ``pytest tests/test_data.py`` and ``pytest --nbval-lax
notebooks/`` all get the same session (this file is at the repository root, so pytest loads it for
every test, lesson cells included):

- The offline mirror of the four sources is required (``CXR_DATA_MIRROR``); the tests read real data,
  never invented stand-ins. ``CXR_EXTERNAL_DIR`` (the external set) is optional; the tests that need it
  say so when they skip.
- Every lesson runs small (``CXR_SMOKE=1``), and every test writes only into this session's temporary
  folders: ``CXR_DATA_DIR`` (fetched, curated and cached data) and ``CXR_RUNS_DIR`` (training runs) are
  set here, before any kernel starts, whatever the caller's environment says. ``results/`` and
  ``notebooks/`` are only read.
- The data is fetched from the mirror and curated once per test run, before the first test or lesson cell
  that needs it (:func:`curated_data`): under pytest-xdist the first worker to need it does it, into a folder
  the run's workers share, and each worker copies the result into its own data folder.
- Under pytest-xdist each worker's TensorFlow, and that of the kernels and processes it starts, gets its share
  of the cores (``TF_NUM_INTRAOP_THREADS``, ``TF_NUM_INTEROP_THREADS``, ``OMP_NUM_THREADS``, unless set): two
  workers on two cores then take turns instead of fighting over them.
- Under pytest-xdist the lessons start at once on one worker, while the other workers begin with the groups
  that need no curated data, then the longest groups (:func:`pytest_collection_modifyitems`).
- Each lesson is executed once per session. With ``--nbval-lax`` nbval executes it (its cells run first,
  in lesson order) and checks the cells marked ``# NBVAL_CHECK_OUTPUT``; the outputs it got are kept
  (:data:`EXECUTED`) and every other check of that lesson reads them (fixture ``lesson``). Without nbval,
  the first test that asks for a lesson executes it once with papermill.

Fixtures: ``mirror``, ``curated_data_dir``, ``external_dir``, ``tiny_run``, ``lesson``.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import nbformat
import papermill as pm
import pytest

REPO = Path(__file__).resolve().parent
_SESSION: dict[str, Path] = {}
_CURATED: dict[str, bool] = {}

EXECUTED: dict[str, nbformat.NotebookNode] = {}
"""Lesson file name -> the committed notebook with the outputs nbval's execution produced, once all its cells ran."""
_PENDING: dict[str, tuple[nbformat.NotebookNode, int]] = {}


def _mirror() -> Path:
    """The offline mirror (``CXR_DATA_MIRROR``); ends the session with a clear message when it is not there."""
    value = os.environ.get("CXR_DATA_MIRROR", "")
    if not value or not Path(value).is_dir():
        pytest.exit(
            "The tests need the offline data mirror: set CXR_DATA_MIRROR to its folder "
            "(e.g. CXR_DATA_MIRROR=../shared/cxr-mirror), or run `python3 tools/course.py test --mirror DIR`.",
            returncode=2,
        )
    return Path(value).resolve()


def pytest_configure(config: pytest.Config) -> None:
    """Point the data and runs folders at fresh temporary folders and make every lesson run small.

    Under pytest-xdist (``-n 2``, what ``tools/course.py test`` runs) each worker is its own session with its
    own folders; the controller runs no test.
    """
    for name in ("CXR_DATA_MIRROR", "CXR_EXTERNAL_DIR"):  # the lessons' kernels run in notebooks/: no relative paths
        if os.environ.get(name, "").strip():
            os.environ[name] = str(Path(os.environ[name].strip()).expanduser().resolve())
    root = Path(tempfile.mkdtemp(prefix="cxr-tests-"))
    _SESSION.update(root=root, data=root / "data", runs=root / "runs")
    if not os.environ.get(SHARED_ENV):  # the first process of the run (xdist's controller): its workers inherit it
        os.environ[SHARED_ENV] = str(root / "shared")
        _SESSION["owns_shared"] = root
    os.environ["CXR_DATA_DIR"] = str(_SESSION["data"])
    os.environ["CXR_RUNS_DIR"] = str(_SESSION["runs"])
    os.environ["CXR_SMOKE"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # each worker's TensorFlow (and its kernels' and subprocesses') gets its share of the cores
        share = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(name, share)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "root" in _SESSION:
        shutil.rmtree(_SESSION["root"], ignore_errors=True)
    if "owns_shared" in _SESSION:  # xdist's controller: its workers are done with the shared data
        os.environ.pop(SHARED_ENV, None)


SHARED_ENV = "CXR_TESTS_SHARED_DIR"
"""The folder that the processes of one test run share (set by the first; xdist's workers inherit it): it holds
the data fetched and curated once for all of them."""


def curated_data() -> Path:
    """Fetch the sources from the mirror and curate them with the real commands, once per test run.

    The first process of the run that needs the data does it, into ``shared/data`` under :data:`SHARED_ENV`
    (with a lock: the others wait for it, then find it done). Every process then copies that folder into
    its own data folder, so that what one worker's tests write there (lesson 01 curates again, the CLI
    tests replace the split) never reaches another's; all but ``cache/``, which they share through a
    symbolic link, so that each image size is decoded once per run. Every worker has the same manifest and
    image files (their modification times copied too), hence the same cache keys, and a cache file is
    replaced whole: two workers that build one at once write the same bytes.

    Returns the session's data folder (``CXR_DATA_DIR``).
    """
    from filelock import FileLock

    data = _SESSION["data"]
    if not _CURATED:
        shared = Path(os.environ[SHARED_ENV]) / "data"
        shared.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(shared.parent / "data.lock"):
            done = shared.parent / "data.complete"
            if not done.is_file():
                env = {**os.environ, "CXR_DATA_DIR": str(shared), "CXR_DATA_MIRROR": str(_mirror())}
                for step in (["fetch", "--quiet"], ["curate", "--quiet"]):
                    proc = subprocess.run([sys.executable, "-m", "cxr_utils.cli", *step], env=env,
                                          capture_output=True, text=True)
                    if proc.returncode != 0:
                        pytest.exit(f"cxr-data {step[0]} failed:\n{proc.stdout}\n{proc.stderr}", returncode=3)
                done.touch()
        top = str(shared)
        shutil.copytree(shared, data, dirs_exist_ok=True,  # copy2 keeps modification times: caches stay valid
                        ignore=lambda folder, names: ["cache"] if folder == top else [])
        try:  # decoded images: each size is decoded once for all workers (cache files are replaced atomically)
            (data / "cache").symlink_to(shared / "cache", target_is_directory=True)
        except OSError:  # no symbolic links here: a copy, and each worker decodes for itself
            shutil.copytree(shared / "cache", data / "cache", dirs_exist_ok=True)
        _CURATED["done"] = True
    return data


def _is_lesson_cell(item: pytest.Item) -> bool:
    return type(item).__name__ == "IPyNbCell"


DATA_FIXTURES = {"curated_data_dir", "tiny_run", "lesson"}
"""Fixtures that need the curated data (lesson and solutions cells need it too)."""

LONG_GROUPS = ("tiny_run", "tests/test_distribute.py", "tests/test_jupyterlab.py")
"""The longest groups after the lessons' (measured on 2 cores: about 130, 60 and 40 s): started early, so that
short groups, not these, are what is left when the first worker runs out of work."""


def _needs_data(item: pytest.Item) -> bool:
    return _is_lesson_cell(item) or bool(DATA_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the run: the lessons' cells first (each lesson once, in order) and the rest of their group, so the
    checks that read them come after; then the groups that need no curated data (another worker runs them
    while the first fetches and curates); then :data:`LONG_GROUPS`; then the rest, in collection order."""
    needs = {}
    for item in items:
        group = group_of(item.nodeid)
        needs[group] = needs.get(group, False) or _needs_data(item)

    def rank(item: pytest.Item) -> tuple[int, int]:
        group = group_of(item.nodeid)
        if group == "lessons":
            return (0, 0 if _is_lesson_cell(item) else 1)
        if not needs[group]:
            return (1, 0)
        return (2, 0) if group in LONG_GROUPS else (3, 0)

    items.sort(key=rank)  # stable: collection order within each rank


GROUPS = {"test_lessons.py": "lessons", **{name: "tiny_run" for name in (
    "test_train.py", "test_tensorboard.py", "test_course_runner.py", "test_predict.py", "test_saliency.py",
    "test_structure.py", "test_reproduction.py")}}
"""Test files whose tests must share one worker under pytest-xdist: the lessons' checks with the lessons' cells
(they read that execution), and the users of the session's ``tiny_run``. Every other file is a group of its own."""


SOLUTIONS_AFTER_LESSONS = ("08_what_the_model_learned_solutions.ipynb",)
"""Solutions notebooks that use the small runs their lesson trained (in the session's runs folder): they run in the
``lessons`` group, after the lessons, and find those runs instead of training them again."""


def group_of(nodeid: str) -> str:
    """The group a test runs in under pytest-xdist: ``lessons`` for the lessons' cells, their checks and the
    solutions of :data:`SOLUTIONS_AFTER_LESSONS`; else the test file's group (:data:`GROUPS`) or the file itself
    (each other solutions notebook is a group of its own, so the two workers share them)."""
    path = nodeid.split("::", 1)[0]
    if path.startswith("notebooks/solutions/"):
        return "lessons" if path.rsplit("/", 1)[-1] in SOLUTIONS_AFTER_LESSONS else path
    if path.startswith("notebooks/"):
        return "lessons"
    return GROUPS.get(path.rsplit("/", 1)[-1], path)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under ``-n N`` (``tools/course.py test``): xdist's scope scheduling, each :func:`group_of` a scope, so a
    group runs whole on one worker; the lessons (collected first) start at once."""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the order pytest_collection_modifyitems gave

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return Groups(config, log)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _is_lesson_cell(item):
        _mirror()
        curated_data()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep the outputs of each lesson cell nbval executed; a lesson is kept whole once all its cells ran."""
    report = yield
    if call.when == "call" and _is_lesson_cell(item):
        name = item.parent.path.name
        if name not in _PENDING:
            nb = copy.deepcopy(item.parent.nb)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            _PENDING[name] = (nb, 0)
        nb, done = _PENDING[name]
        code = [c for c in nb.cells if c.cell_type == "code"]
        code[item.cell_num].outputs = [nbformat.from_dict(dict(o)) for o in (item.test_outputs or [])]
        code[item.cell_num].execution_count = item.cell_num + 1
        _PENDING[name] = (nb, done + 1)
        if done + 1 == len(code):
            EXECUTED[name] = nb
    return report


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline mirror of the four sources (read-only: never write into it)."""
    return _mirror()


@pytest.fixture(scope="session")
def curated_data_dir(mirror: Path) -> Path:
    """The session's data root (``CXR_DATA_DIR``), fetched from the mirror and curated with the real commands."""
    return curated_data()


@pytest.fixture(scope="session")
def external_dir() -> Path:
    """The external set (``CXR_EXTERNAL_DIR``: 300 COVID-19 and 300 adult Normal images from another collection)."""
    from cxr_utils import paths

    root = paths.external_dir()
    if root is None or not root.is_dir():
        pytest.skip("CXR_EXTERNAL_DIR is not set: give the external set with "
                    "`python3 tools/course.py test --external ../shared/cxr-external` (as the README does)")
    return root


@pytest.fixture(scope="session")
def tiny_run(curated_data_dir: Path) -> Path:
    """One complete 4-epoch run of the ``improved`` recipe at 64 px on 96 images per split, in the session's runs
    folder (``runs/tiny``): the real training loop, small enough for the tests that need a finished run."""
    from cxr_utils import train

    return train.train_recipe("improved", "tiny", epochs=4, subset=96, image_size=64, verbose=0)


class LessonRun:
    """An executed lesson: the notebook, its printed text (runs of blanks folded to one) and its figures."""

    def __init__(self, nb: nbformat.NotebookNode):
        self.nb = nb
        parts = []
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                parts.append(_text(out.get("text", "")))
                parts.append(_text(out.get("data", {}).get("text/plain", "")))
        self.text = re.sub(r"[ \t]+", " ", "\n".join(parts))  # printed tables' column widths vary
        self.figures = sum(
            any(k in out.get("data", {}) for k in ("image/png", "image/jpeg"))
            for cell in nb.cells for out in cell.get("outputs", [])
        )
        self.errors = [f"{out.get('ename')}: {out.get('evalue')}" for cell in nb.cells
                       for out in cell.get("outputs", []) if out.get("output_type") == "error"]

    def line(self, part: str) -> str:
        """The first printed line that holds ``part`` (after folding blanks)."""
        found = [ln for ln in self.text.splitlines() if part in ln]
        assert found, f"no printed line holds {part!r}"
        return found[0].strip()

    def number(self, pattern: str) -> float:
        """The number captured by the regular expression ``pattern`` (its first group) in the printed text."""
        match = re.search(pattern, self.text)
        assert match, f"nothing printed matches {pattern!r}"
        return float(match.group(1))


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


_RUNS: dict[str, LessonRun] = {}


@pytest.fixture(scope="session")
def lesson(curated_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], LessonRun]:
    """``lesson("01_data_curation.ipynb")``: the session's one execution of that lesson, at smoke parameters.

    nbval's execution when it ran the lesson (``--nbval-lax``), else one papermill execution, kept for
    the rest of the session.
    """

    def get(name: str) -> LessonRun:
        if name not in _RUNS:
            if name in EXECUTED:
                nb = EXECUTED[name]
            else:
                notebook = REPO / "notebooks" / name
                out = tmp_path_factory.mktemp("lessons") / name
                pm.execute_notebook(str(notebook), str(out), parameters={"smoke": True}, cwd=str(notebook.parent),
                                    kernel_name="python3", progress_bar=False)
                nb = nbformat.read(out, as_version=4)
            _RUNS[name] = LessonRun(nb)
        run = _RUNS[name]
        assert not run.errors, f"{name} raised: {run.errors}"
        return run

    return get
