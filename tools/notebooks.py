#!/usr/bin/env python3
"""Keep every lesson's header in step, and execute lessons for commit.

Each lesson starts with the same three cells, which this tool writes (idempotently):

1. a markdown cell opening with the "Open in Colab" badge for *that* notebook (the line marked
   ``<!-- colab-badge -->``; the rest of the cell, title and introduction, is the author's);
2. a code cell tagged ``setup``: on Google Colab it clones the course, installs it and fetches
   the data; everywhere else it only calls ``cxr_utils.notebook.setup()`` (quiet TensorFlow import,
   figure dpi), installing and downloading nothing;
3. the author's code cell tagged ``parameters`` (papermill injects values after it).

The badge and the Colab setup are generated from one setting, ``[tool.cxr-course] repository``
in ``pyproject.toml``, so a fork repoints every badge with one command:

    python tools/notebooks.py sync --repository YOU/your-fork   # rewrite the setting and every header
    python tools/notebooks.py sync                               # re-sync headers to the setting
    python tools/notebooks.py check                              # exit 1 if any header is out of step
    python tools/notebooks.py execute 01 02                      # run lessons in place (full parameters)

``execute`` runs papermill in place from ``notebooks/`` and then removes machine-specific metadata
(absolute paths) so the committed file shows results and nothing about the machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PYPROJECT = REPO / "pyproject.toml"
BADGE_MARKER = "<!-- colab-badge -->"
SETUP_TAG = "setup"
CLONE_DIR = "/content/covid-cxr-course"


def repository_setting() -> str:
    """Return ``owner/name`` from ``[tool.cxr-course] repository`` in pyproject.toml."""
    with PYPROJECT.open("rb") as fh:
        return tomllib.load(fh)["tool"]["cxr-course"]["repository"]


def set_repository_setting(repository: str) -> None:
    """Rewrite the ``repository = "..."`` line of ``[tool.cxr-course]`` in pyproject.toml."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository):
        raise SystemExit(f"--repository must look like OWNER/NAME, got {repository!r}")
    text = PYPROJECT.read_text()
    new, n = re.subn(
        r'(\[tool\.cxr-course\][^\[]*?\nrepository = )"[^"]*"', rf'\1"{repository}"', text, count=1
    )
    if n != 1:
        raise SystemExit("could not find `repository = ...` under [tool.cxr-course] in pyproject.toml")
    PYPROJECT.write_text(new)


def badge_line(repository: str, notebook_name: str) -> str:
    """Return the marked HTML line of the Colab badge for ``notebooks/<notebook_name>``."""
    url = f"https://colab.research.google.com/github/{repository}/blob/main/notebooks/{notebook_name}"
    return (
        f'{BADGE_MARKER}<a href="{url}" target="_parent"><img '
        'src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>'
    )


def setup_source(repository: str) -> str:
    """Return the source of the setup cell: installs and fetches on Colab only."""
    return f'''# Setup. On Google Colab this installs the course and fetches its data (a few minutes, once);
# Anywhere else it installs and downloads nothing: it only quiets TensorFlow and sets figure sizes.
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
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "imagehash", "kagglehub", "papermill"],
                       check=True)
    sys.path.insert(0, "{CLONE_DIR}")
    os.chdir("{CLONE_DIR}/notebooks")
    subprocess.run([sys.executable, "-m", "cxr_utils.cli", "fetch"], check=True)
    subprocess.run([sys.executable, "-m", "cxr_utils.cli", "curate"], check=True)

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
        raise SystemExit(f"{name}: the first cell must be the markdown title cell")
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
    cells[setup[0]]["source"] = setup_source(repository)
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
    if len(setup) != 1 or _source(setup[0]) != setup_source(repository):
        problems.append(f"{name}: setup cell missing or edited by hand (run tools/notebooks.py sync)")
    params = [i for i, c in enumerate(cells) if "parameters" in _tags(c)]
    if len(params) != 1:
        problems.append(f"{name}: needs exactly one cell tagged 'parameters'")
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        problems.append(f"{name}: kernelspec must be 'python3'")
    return problems


def lessons(selected: list[str] | None = None) -> list[Path]:
    """Return the lesson notebooks (``notebooks/NN_*.ipynb``), optionally only numbers ``selected``."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in found if not selected or p.name[:2] in selected]


def load(path: Path) -> dict:
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
    tmp = path.with_suffix(".ipynb.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def clean_metadata(nb: dict) -> dict:
    """Drop machine-specific metadata that papermill records (absolute input/output paths)."""
    pm = nb.get("metadata", {}).get("papermill")
    if pm:
        for key in ("input_path", "output_path", "environment_variables"):
            pm.pop(key, None)
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_sync = sub.add_parser("sync", help="write badge and setup cell into every lesson")
    p_sync.add_argument("--repository", help="new OWNER/NAME to store in pyproject.toml first")
    sub.add_parser("check", help="exit 1 when a header is out of step")
    p_exec = sub.add_parser("execute", help="execute lessons in place with papermill")
    p_exec.add_argument("lessons", nargs="*", help="lesson numbers, e.g. 01 02 (default: all)")
    p_exec.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="papermill parameter (repeatable)")
    args = parser.parse_args()

    if args.cmd == "sync":
        if args.repository:
            set_repository_setting(args.repository)
        repo = repository_setting()
        for path in lessons():
            save(path, synced(load(path), path.name, repo))
        print(f"{len(lessons())} lessons point at github.com/{repo}")
    elif args.cmd == "check":
        repo = repository_setting()
        problems = [p for path in lessons() for p in header_problems(load(path), path.name, repo)]
        print("\n".join(problems) or f"all {len(lessons())} lesson headers in step with {repo}")
        sys.exit(1 if problems else 0)
    else:
        repo = repository_setting()
        for path in lessons(args.lessons):
            save(path, synced(load(path), path.name, repo))
            cmd = [sys.executable, "-m", "papermill", str(path), str(path), "--cwd", str(NOTEBOOKS),
                   "--kernel", "python3", "--no-progress-bar"]
            for name, value in args.p:
                cmd += ["-p", name, value]
            print(f"executing {path.name} ...", flush=True)
            subprocess.run(cmd, check=True)
            save(path, clean_metadata(load(path)))


if __name__ == "__main__":
    main()
