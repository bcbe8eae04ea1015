"""The lessons as files: their shared header (Colab badge, setup cell), and executing them for commit.

Each lesson starts with the same three cells, which :func:`synced` writes (idempotently):

1. a markdown cell opening with the "Open in Colab" badge for *that* notebook (the line marked
   ``<!-- colab-badge -->``; the rest of the cell, title and introduction, is the author's);
2. a code cell tagged ``setup``: on Google Colab it clones the course, installs it and, unless the
   lesson is in :data:`DATA_FREE`, fetches the data; everywhere else it only calls
   ``cxr_utils.notebook.setup()`` (TensorFlow's first import made quiet, figure dpi), installing and
   downloading nothing;
3. the author's code cell tagged ``parameters`` (papermill injects values after it).

The badge and the Colab setup come from one setting, ``[tool.cxr-course] repository`` in
``pyproject.toml``, so a fork repoints every badge with one command (``tools/notebooks.py sync
--repository OWNER/NAME``). :func:`header_problems` lists what is out of step; :func:`save` writes a
lesson atomically and only when it changed; :func:`clean_metadata` drops machine-specific metadata.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from cxr_utils import atomic, paths

REPO = paths.REPO_ROOT
"""The course's root folder; every function that reads or writes the course takes ``root`` (default this)."""
BADGE_MARKER = "<!-- colab-badge -->"
SETUP_TAG = "setup"
CLONE_DIR = "/content/covid-cxr-course"


class LessonsError(ValueError):
    """The course's settings or a lesson's header cannot be used as asked; the message says why."""


def repository_setting(root: Path = REPO) -> str:
    """Return ``owner/name`` from ``[tool.cxr-course] repository`` in ``root``'s pyproject.toml."""
    with (Path(root) / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["tool"]["cxr-course"]["repository"]


def set_repository_setting(repository: str, root: Path = REPO) -> None:
    """Rewrite the ``repository = "..."`` line of ``[tool.cxr-course]`` in ``root``'s pyproject.toml.

    Raises:
        LessonsError: ``repository`` is not ``OWNER/NAME``, or the setting is not in pyproject.toml.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository):
        raise LessonsError(f"--repository must look like OWNER/NAME, got {repository!r}")
    pyproject = Path(root) / "pyproject.toml"
    text = pyproject.read_text()
    new, n = re.subn(
        r'(\[tool\.cxr-course\][^\[]*?\nrepository = )"[^"]*"', rf'\1"{repository}"', text, count=1
    )
    if n != 1:
        raise LessonsError("could not find `repository = ...` under [tool.cxr-course] in pyproject.toml")
    atomic.write_text(pyproject, new)


def badge_line(repository: str, notebook_name: str) -> str:
    """Return the marked HTML line of the Colab badge for ``notebooks/<notebook_name>``."""
    url = f"https://colab.research.google.com/github/{repository}/blob/main/notebooks/{notebook_name}"
    return (
        f'{BADGE_MARKER}<a href="{url}" target="_parent"><img '
        'src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>'
    )


DATA_FREE = ("03_architecture.ipynb",)
"""Lessons that read no data files (03 builds networks; 07 reads the curated manifest for its section on
priors, so it is not among them): on Colab their setup cell fetches nothing."""


def setup_source(repository: str, notebook_name: str = "") -> str:
    """Return the source of ``notebook_name``'s setup cell: installs on Colab only, and fetches the data there
    only for a lesson that reads images (not those in :data:`DATA_FREE`)."""
    needs_data = notebook_name not in DATA_FREE
    what = "installs the course and fetches its data" if needs_data else "installs the course"
    return f'''# Setup. On Google Colab this {what} (a few minutes, once);
# anywhere else it installs and downloads nothing: it only quiets TensorFlow and sets figure sizes.
import os
import sys

if "google.colab" in sys.modules:
    import subprocess

    if not os.path.isdir("{CLONE_DIR}"):
        subprocess.run(["git", "clone", "-q", "--depth", "1",
                        "https://github.com/{repository}.git", "{CLONE_DIR}"], check=True)
        # Colab already has TensorFlow and the scientific stack; add only what it lacks. Colab's Python
        # is newer than the 3.11 the course pins, so pip must not refuse the package for that.
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-requires-python",
                        "-e", "{CLONE_DIR}"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "imagehash", "kagglehub", "papermill",
                        "pydicom"], check=True)
    sys.path.insert(0, "{CLONE_DIR}")
    os.chdir("{CLONE_DIR}/notebooks")
    import cxr_utils.colab

    cxr_utils.colab.prepare(needs_data={needs_data})  # version check; data (Kaggle token asked for first)

import cxr_utils.notebook

cxr_utils.notebook.setup()'''


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def synced(nb: dict, name: str, repository: str) -> dict:
    """Return ``nb`` with its badge line and setup cell matching ``repository``."""
    cells = nb["cells"]
    if not cells or cells[0]["cell_type"] != "markdown":
        raise LessonsError(f"{name}: the first cell must be the markdown title cell")
    lines = _source(cells[0]).splitlines()
    lines = [ln for ln in lines if BADGE_MARKER not in ln]
    cells[0]["source"] = "\n".join([badge_line(repository, name), *lines])
    setup = [i for i, c in enumerate(cells) if SETUP_TAG in _tags(c)]
    if not setup:
        cell = {
            "cell_type": "code", "execution_count": None, "id": "setup",
            "metadata": {"tags": [SETUP_TAG]}, "outputs": [], "source": "",
        }
        cells.insert(1, cell)
        setup = [1]
    cells[setup[0]]["source"] = setup_source(repository, name)
    nb.setdefault("metadata", {})["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3",
    }
    return nb


def header_problems(nb: dict, name: str, repository: str) -> list[str]:
    """List what is out of step in a notebook's header (empty when all is well)."""
    problems = []
    cells = nb.get("cells", [])
    first = _source(cells[0]) if cells else ""
    if badge_line(repository, name) not in first:
        problems.append(f"{name}: Colab badge missing or not pointing at {repository}/notebooks/{name}")
    if not re.search(r"^# \S", first, flags=re.M):
        problems.append(f"{name}: first cell has no '# Title' line")
    setup = [c for c in cells if SETUP_TAG in _tags(c)]
    if len(setup) != 1 or _source(setup[0]) != setup_source(repository, name):
        problems.append(f"{name}: setup cell missing or edited by hand (run tools/notebooks.py sync)")
    params = [i for i, c in enumerate(cells) if "parameters" in _tags(c)]
    if len(params) != 1:
        problems.append(f"{name}: needs exactly one cell tagged 'parameters'")
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        problems.append(f"{name}: kernelspec must be 'python3'")
    return problems


TIME = re.compile(r"\*\*Time:\*\* (\d+(?:\.\d)?) min")
"""How a lesson's title cell states its time: ``**Time:** 3.2 min ...``, the papermill time of its committed run."""


def minutes(seconds: float) -> str:
    """``seconds`` as the course writes lesson times: one decimal under ten minutes, whole minutes above."""
    return f"{seconds / 60:.1f}" if seconds < 600 else f"{seconds / 60:.0f}"


def committed_minutes(nb: dict) -> str | None:
    """The time of the lesson's committed execution (papermill's ``duration``), as :func:`minutes` writes it."""
    duration = nb.get("metadata", {}).get("papermill", {}).get("duration")
    return None if duration is None else minutes(float(duration))


def with_time(nb: dict) -> dict:
    """``nb`` with the ``**Time:** N min`` of its title cell set to its committed execution's time.

    This is the one source of a lesson's time: ``tools/notebooks.py execute`` calls it after each run, and
    ``tests/test_lesson_times.py`` checks the README's course map against the same number.
    """
    value = committed_minutes(nb)
    if value is not None and nb["cells"]:
        title = nb["cells"][0]
        title["source"] = TIME.sub(f"**Time:** {value} min", _source(title), count=1)
    return nb


def lessons(selected: list[str] | None = None, root: Path = REPO) -> list[Path]:
    """Return the lesson notebooks (``<root>/notebooks/NN_*.ipynb``), optionally only numbers ``selected``."""
    found = sorted((Path(root) / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return [p for p in found if not selected or p.name[:2] in selected]


def solutions(selected: list[str] | None = None, root: Path = REPO) -> list[Path]:
    """Return the lessons' solutions notebooks (``<root>/notebooks/solutions/NN_*_solutions.ipynb``)."""
    found = sorted((Path(root) / "notebooks" / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))
    return [p for p in found if not selected or p.name[:2] in selected]


def load(path: Path) -> dict:
    """Read a notebook as plain JSON (no nbformat upgrade: what is on disk)."""
    return json.loads(path.read_text(encoding="utf-8"))


def save(path: Path, nb: dict) -> None:
    """Write ``nb`` atomically, laid out as nbformat writes it (sources as lists of lines), and only
    if it changed, so that syncing an up-to-date lesson leaves the file untouched."""
    for cell in nb.get("cells", []):
        src = cell.get("source", "")
        if isinstance(src, str):
            cell["source"] = src.splitlines(keepends=True)
    text = json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    atomic.write_text(path, text)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def leftover_widget_state(nb: dict) -> bool:
    """Whether ``nb`` saves the state of widgets that none of its outputs shows (a progress bar of an earlier
    execution leaves it behind in the notebook's metadata)."""
    shown = any(WIDGET_VIEW in out.get("data", {}) for cell in nb.get("cells", []) for out in cell.get("outputs", []))
    return "widgets" in nb.get("metadata", {}) and not shown


def clean_metadata(nb: dict) -> dict:
    """Drop machine-specific metadata that papermill records (absolute input/output paths), and widget state
    no output shows (:func:`leftover_widget_state`)."""
    meta = nb.get("metadata", {})
    pm = meta.get("papermill")
    if pm:
        for key in ("input_path", "output_path", "environment_variables"):
            pm.pop(key, None)
    if leftover_widget_state(nb):
        meta.pop("widgets")
    return nb


# ---------------------------------------------------------------------------------------------
# Running the course: every lesson with papermill, showing its progress


NOISE = re.compile(
    r"cudart_stub\.cc|Could not find cuda drivers|absl::InitializeLog|Kernel is running over TCP without encryption|"
    r"oneDNN custom operations|rebuild TensorFlow with the appropriate compiler flags|MissingIDFieldWarning|"
    r"_validate\(nbdict|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"TF-TRT Warning|^\s*$|^(Executing|Ending) Cell|^(Input|Output) Notebook:|^Executing notebook with kernel"
)
"""Known start-up noise in a lesson's output (TensorFlow looking for CUDA, the kernel's TCP warning, papermill's
cell markers): never shown while the course runs; the executed notebook keeps everything."""
SHOW = re.compile(r"^(epoch\s+\d+/\d+\s|training '|resuming after|done: best epoch|estimate: |\S+ is complete: "
                  r"nothing to train)")
"""The lines shown while a lesson runs: its estimate and the training progress."""
_ESTIMATE = re.compile(r"^estimate: (\S+), (\d+) epochs of about ([\d.]+) s")
_EPOCH = re.compile(r"^epoch\s+(\d+)/(\d+)\s.*\|\s*([\d.]+) s")
_TRAINING = re.compile(r"^training '([^']+)'")
_RESUMING = re.compile(r"^resuming after epoch (\d+) of")


class Progress:
    """The time left in a lesson: the estimate it printed, corrected by the epochs measured so far.

    Feed it every shown line; :meth:`left` is the sum, over the recipes the lesson said it would train,
    of the epochs still to go times the measured mean epoch (the estimate before the first epoch).
    """

    def __init__(self) -> None:
        self.plan: dict[str, tuple[int, float]] = {}
        self.current: str | None = None
        self.measured: dict[str, list[float]] = {}
        self.resumed: dict[str, int] = {}

    def feed(self, line: str) -> str | None:
        """Take one shown line; after an epoch line, return a note of the time left."""
        line = line.strip()
        if m := _ESTIMATE.search(line):
            self.plan[m.group(1)] = (int(m.group(2)), float(m.group(3)))
        elif m := _TRAINING.search(line):
            self.current = m.group(1)
        elif (m := _RESUMING.search(line)) and self.current:
            self.resumed[self.current] = int(m.group(1))
        elif (m := _EPOCH.search(line)) and self.current:
            self.measured.setdefault(self.current, []).append(float(m.group(3)))
            if self.plan:
                return f"about {self.left() / 60:.0f} min left in this lesson"
        return None

    def left(self) -> float:
        """Seconds still to train, by the estimate and the epochs measured so far."""
        total = 0.0
        for recipe, (epochs, per_epoch) in self.plan.items():
            times = self.measured.get(recipe, [])
            per = sum(times) / len(times) if times else per_epoch
            total += max(epochs - self.resumed.get(recipe, 0) - len(times), 0) * per
        return total


def parameters_of(notebook: Path) -> set[str]:
    """The names a lesson's ``parameters`` cell assigns (the ones papermill can set)."""
    for cell in load(notebook)["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return set(re.findall(r"^(\w+)\s*=", _source(cell), flags=re.M))
    return set()


def execute(notebook: Path, out: Path, parameters: dict[str, str], show=print) -> int:
    """Execute ``notebook`` into ``out`` with papermill (``-p NAME VALUE`` for each parameter), showing progress.

    Shows (through ``show``) the lines :data:`SHOW` matches, each epoch followed by the time left
    (:class:`Progress`); on failure, the last lines the lesson printed, noise left out. Returns papermill's
    exit status.
    """
    import collections
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "papermill", str(notebook), str(out), "--cwd", str(notebook.parent),
           "--kernel", "python3", "--no-progress-bar", "--log-output"]
    for name, value in parameters.items():
        cmd += ["-p", name, value]
    tail: collections.deque[str] = collections.deque(maxlen=60)
    progress = Progress()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        if NOISE.search(line):
            continue
        tail.append(line)
        if SHOW.search(line.strip()):
            show(f"    {line.strip()}")
            note = progress.feed(line)
            if note:
                show(f"      ({note})")
    code = proc.wait()
    if code != 0:
        show("\n".join(tail))
    return code


def run(selected: list[str] | None = None, quick: bool = False, strategy: str | None = None,
        out_dir: Path | None = None, root: Path = REPO) -> int:
    """Execute the lessons (all, or the numbers ``selected``) into ``out_dir`` (default ``<runs>/notebooks``).

    ``quick`` and ``strategy`` go to the lessons whose parameters cell has them (lesson 06 trains short
    versions of the recipes into their own run folders with ``quick``). Returns 0, or the failing
    lesson's exit status after naming it.
    """
    import time

    out_dir = Path(out_dir or paths.runs_dir() / "notebooks")
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = []
    for nb in lessons(selected, root):
        names = parameters_of(nb)
        params = {k: v for k, v in (("quick", "True" if quick else None), ("strategy", strategy))
                  if v is not None and k in names}
        print(f"[course] executing {nb.name}" + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})"
                                                 if params else ""), flush=True)
        t = time.time()
        code = execute(nb, out_dir / nb.name, params, show=lambda text: print(text, flush=True))
        if code != 0:
            print(f"[course] {nb.name} failed (exit {code}); the executed notebook is {out_dir / nb.name}")
            return code
        timings.append((nb.name, time.time() - t))
        print(f"[course] {nb.name} done in {(time.time() - t) / 60:.1f} min", flush=True)
    print()
    for name, secs in timings:
        print(f"  {name:<40s} {secs / 60:5.1f} min")
    total = sum(s for _, s in timings)
    where = out_dir.relative_to(root) if out_dir.is_relative_to(root) else out_dir
    print(f"Course complete: {len(timings)} lessons executed into {where}/ in {total / 60:.1f} min.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cxr_utils.lessons run [NN ...] [--quick] [--strategy mirrored]``: execute the lessons."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cxr_utils.lessons", description="Execute the course's lessons.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="execute the lessons with papermill, showing their progress")
    p_run.add_argument("lessons", nargs="*", help="lesson numbers, e.g. 01 06 (default: all)")
    p_run.add_argument("--quick", action="store_true", help="short versions of the recipes, in their own run folders")
    p_run.add_argument("--strategy", choices=["mirrored"], help="train on every GPU of this machine")
    args = parser.parse_args(argv)
    return run(args.lessons or None, quick=args.quick, strategy=args.strategy)


if __name__ == "__main__":
    raise SystemExit(main())
