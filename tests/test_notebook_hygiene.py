"""Every committed lesson is clean: executed in order, no errors, standard header, small, and
nothing about the machine it ran on.

Each check is a function ``nb -> list of problems`` (empty when clean), so the same functions run
over every ``notebooks/NN_*.ipynb`` and over deliberately broken copies (the second half of this
file), which shows each check can fire.
"""

from __future__ import annotations

import ast
import base64
import copy
import io
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from cxr_utils import lessons

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))

MAX_IMAGE_BYTES = 200_000
MAX_FILE_BYTES = 1_500_000
IMAGE_MIME_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")
ABSOLUTE_PATHS = re.compile(r"(/root/|/home/|/tmp/|/work/|/Users/|[A-Za-z]:\\Users)")
BADGE = re.compile(
    r'<a href="https://colab\.research\.google\.com/github/[^"]+/blob/main/notebooks/[^"]+\.ipynb"[^>]*>'
    r'\s*<img src="https://colab\.research\.google\.com/assets/colab-badge\.svg"'
)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]


def load(path: Path) -> dict:
    """Read a notebook as plain JSON (no nbformat upgrade, so we check what is committed)."""
    return json.loads(path.read_text(encoding="utf-8"))


# --- the checks ---------------------------------------------------------------------------------


def schema_problems(nb: dict) -> list[str]:
    """The notebook must validate against the nbformat v4 schema."""
    if nb.get("nbformat") != 4:
        return [f"nbformat is {nb.get('nbformat')}, expected 4"]
    try:
        nbformat.validate(nbformat.from_dict(copy.deepcopy(nb)))
    except nbformat.ValidationError as err:
        return [f"not a valid nbformat 4 notebook: {err.message}"]
    return []


def error_output_problems(nb: dict) -> list[str]:
    """No committed error outputs (a traceback means the lesson did not run through)."""
    problems = []
    for i, cell in enumerate(_code_cells(nb)):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"code cell {i + 1} has an error output: {out.get('ename')}: {out.get('evalue')}")
    return problems


def execution_count_problems(nb: dict) -> list[str]:
    """Code cells are all executed, top to bottom in one run: execution counts 1, 2, 3, ..."""
    problems = []
    for expected, cell in enumerate(_code_cells(nb), start=1):
        count = cell.get("execution_count")
        if count != expected:
            what = "was not executed" if count is None else f"has execution_count {count}"
            problems.append(f"code cell {expected} {what}, expected {expected} (re-run top to bottom)")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "execute_result" and out.get("execution_count") != count:
                problems.append(f"code cell {expected}: result's execution_count {out.get('execution_count')} "
                                f"differs from the cell's {count}")
    return problems


def header_problems(nb: dict, name: str) -> list[str]:
    """Cell 1: markdown ``# NN · Title`` with the Colab badge; cell 2: code tagged ``setup``;
    cell 3: code tagged ``parameters`` that assigns ``smoke``."""
    cells = nb.get("cells", [])
    if len(cells) < 3:
        return [f"only {len(cells)} cells; a lesson starts with title, setup and parameters cells"]
    problems = []
    title, setup, params = cells[:3]
    if title.get("cell_type") != "markdown":
        problems.append("cell 1 must be the markdown title cell")
    if not re.search(rf"^# {re.escape(name[:2])}\b.*\S", _source(title), flags=re.M):
        problems.append(f"cell 1 has no title line '# {name[:2]} · Title'")
    if not BADGE.search(_source(title)):
        problems.append("cell 1 has no 'Open in Colab' badge (run tools/notebooks.py sync)")
    if setup.get("cell_type") != "code" or "setup" not in setup.get("metadata", {}).get("tags", []):
        problems.append("cell 2 must be the code cell tagged 'setup' (run tools/notebooks.py sync)")
    if params.get("cell_type") != "code" or "parameters" not in params.get("metadata", {}).get("tags", []):
        problems.append("cell 3 must be the code cell tagged 'parameters'")
    else:
        try:
            tree = ast.parse(_source(params))
        except SyntaxError as err:
            return [*problems, f"parameters cell does not parse: {err}"]
        assigned = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
        if "smoke" not in assigned:
            problems.append("parameters cell does not define `smoke` (see CONVENTIONS: smoke = os.environ...)")
    return problems


def kernelspec_problems(nb: dict) -> list[str]:
    """The kernelspec is ``python3`` so papermill and nbval find it anywhere."""
    name = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    return [] if name == "python3" else [f"kernelspec is {name!r}, expected 'python3'"]


def size_problems(nb: dict, file_bytes: int) -> list[str]:
    """Each image output below MAX_IMAGE_BYTES, the whole file below MAX_FILE_BYTES."""
    problems = []
    if file_bytes >= MAX_FILE_BYTES:
        problems.append(f"file is {file_bytes / 1e6:.2f} MB, limit {MAX_FILE_BYTES / 1e6:.1f} MB "
                        "(lower dpi, fewer/smaller figures, less printed output)")
    for i, cell in enumerate(_code_cells(nb)):
        for out in cell.get("outputs", []):
            for mime, data in out.get("data", {}).items():
                if mime not in IMAGE_MIME_TYPES:
                    continue
                text = _text(data)
                size = len(text.encode()) if mime == "image/svg+xml" else len(base64.b64decode(text))
                if size >= MAX_IMAGE_BYTES:
                    problems.append(f"code cell {i + 1}: {mime} output is {size / 1e3:.0f} KB, "
                                    f"limit {MAX_IMAGE_BYTES / 1e3:.0f} KB (use dpi 80, smaller figsize)")
    return problems


def _strings(value, where: str):
    """Yield (where, string) for every string inside nested dicts/lists."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):  # multi-line text stored as a list
            yield where, "".join(value)
        else:
            for k, item in enumerate(value):
                yield from _strings(item, f"{where}[{k}]")


def _output_texts(nb: dict):
    for i, cell in enumerate(nb.get("cells", [])):
        yield from _strings(cell.get("metadata", {}), f"cell {i + 1} metadata")
        for j, out in enumerate(cell.get("outputs", [])):
            where = f"cell {i + 1} output {j + 1}"
            for key, value in out.items():
                if key == "data":
                    for mime, data in value.items():
                        if mime not in IMAGE_MIME_TYPES or mime == "image/svg+xml":  # skip base64
                            yield from _strings(data, f"{where} {mime}")
                else:
                    yield from _strings(value, f"{where} {key}")
    yield from _strings(nb.get("metadata", {}), "notebook metadata")


def machine_detail_problems(nb: dict, hostname: str | None = None) -> list[str]:
    """No absolute paths (/root/, /home/, /tmp/, /work/, C:\\Users) and not this machine's hostname
    in outputs or metadata: print paths relative to the data dir."""
    hostname = socket.gethostname() if hostname is None else hostname
    host = None
    if hostname and hostname.lower() not in ("localhost", "localhost.localdomain"):
        host = re.compile(rf"(?<![\w.-]){re.escape(hostname)}(?![\w-])", re.IGNORECASE)
    problems = []
    for where, text in _output_texts(nb):
        for match in ABSOLUTE_PATHS.finditer(text):
            snippet = text[max(0, match.start() - 30): match.end() + 30].replace("\n", " ")
            problems.append(f"{where}: absolute path {match.group(0)!r} in ...{snippet}...")
            break
        if host and host.search(text):
            problems.append(f"{where}: this machine's hostname {hostname!r} appears")
    return problems


def widget_state_problems(nb: dict) -> list[str]:
    """No saved widget state that no output shows (tools/notebooks.py execute drops it)."""
    return ["notebook metadata saves widgets no output shows: re-save it with lessons.clean_metadata"] \
        if lessons.leftover_widget_state(nb) else []


def notebook_problems(path: Path) -> list[str]:
    """All hygiene problems of one lesson file."""
    nb = load(path)
    return [
        *schema_problems(nb), *error_output_problems(nb), *execution_count_problems(nb),
        *header_problems(nb, path.name), *kernelspec_problems(nb), *size_problems(nb, path.stat().st_size),
        *machine_detail_problems(nb), *widget_state_problems(nb),
    ]


# --- the committed lessons ----------------------------------------------------------------------


def test_the_course_has_lessons():
    assert LESSONS, f"no lessons notebooks/NN_*.ipynb in {NOTEBOOKS.relative_to(REPO)}/: the course must have lessons"


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_committed_lesson_is_clean(path):
    problems = notebook_problems(path)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_notebook_tool_check_passes_on_the_committed_lessons():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "notebooks.py"), "check"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"tools/notebooks.py check failed:\n{proc.stdout}{proc.stderr}"
    assert LESSONS, "tools/notebooks.py check found no lessons to check"


# --- each check fires on a lesson with one defect -----------------------------------------------


@pytest.fixture
def lesson():
    """The first committed lesson, made clean where a lesson still in progress may not be (header
    synced by tools/notebooks.py, execution counts 1, 2, 3, ...): (name, notebook dict)."""
    assert LESSONS, "no committed lesson to build broken copies from: the course must have lessons"
    nb = lessons.synced(load(LESSONS[0]), LESSONS[0].name, lessons.repository_setting())
    for count, cell in enumerate(_code_cells(nb), start=1):
        cell["execution_count"] = count
        for out in cell.get("outputs", []):
            if out.get("output_type") == "execute_result":
                out["execution_count"] = count
    return LESSONS[0].name, nb


def _new_problems(check, good: dict, bad: dict, **kwargs) -> set[str]:
    """Problems ``check`` reports on ``bad`` that it does not report on ``good``."""
    return set(check(bad, **kwargs)) - set(check(good, **kwargs))


def _new_size_problems(good: dict, bad: dict, path: Path) -> set[str]:
    """Size problems of ``bad`` written to ``path`` that the committed lesson does not have."""
    path.write_text(json.dumps(bad, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    good_path = path.with_name("good-" + path.name)
    good_path.write_text(json.dumps(good, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return set(size_problems(bad, path.stat().st_size)) - set(size_problems(good, good_path.stat().st_size))


def _code_cell_after_parameters(nb: dict) -> dict:
    cells = _code_cells(nb)
    assert len(cells) >= 3, "the lesson needs a code cell after setup and parameters"
    return cells[2]


def _noise_png(width: int, height: int) -> str:
    """A real PNG of seeded random noise (incompressible), base64 encoded as in a notebook."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_schema_check_fires_on_a_code_cell_without_outputs(lesson):
    _, good = lesson
    bad = copy.deepcopy(good)
    del _code_cell_after_parameters(bad)["outputs"]
    assert _new_problems(schema_problems, good, bad)


def test_error_check_fires_on_a_committed_traceback(lesson):
    _, good = lesson
    bad = copy.deepcopy(good)
    _code_cell_after_parameters(bad)["outputs"].append(
        {"output_type": "error", "ename": "FileNotFoundError", "evalue": "manifest.csv", "traceback": ["..."]}
    )
    assert any("FileNotFoundError" in p for p in _new_problems(error_output_problems, good, bad))


def test_execution_count_check_fires_on_cells_run_out_of_order(lesson):
    _, good = lesson
    bad = copy.deepcopy(good)
    first, second = _code_cells(bad)[:2]
    first["execution_count"], second["execution_count"] = second["execution_count"], first["execution_count"]
    assert _new_problems(execution_count_problems, good, bad)


def test_execution_count_check_fires_on_an_unexecuted_cell(lesson):
    _, good = lesson
    bad = copy.deepcopy(good)
    _code_cells(bad)[-1]["execution_count"] = None
    assert any("was not executed" in p for p in _new_problems(execution_count_problems, good, bad))


def test_header_check_fires_when_the_badge_is_missing(lesson):
    name, good = lesson
    bad = copy.deepcopy(good)
    title = bad["cells"][0]
    title["source"] = "\n".join(ln for ln in _source(title).splitlines() if "colab-badge" not in ln)
    assert any("badge" in p for p in _new_problems(header_problems, good, bad, name=name))


def test_header_check_fires_when_the_setup_cell_is_untagged(lesson):
    name, good = lesson
    bad = copy.deepcopy(good)
    bad["cells"][1]["metadata"]["tags"] = []
    assert any("setup" in p for p in _new_problems(header_problems, good, bad, name=name))


def test_header_check_fires_when_the_parameters_cell_lacks_smoke(lesson):
    name, good = lesson
    bad = copy.deepcopy(good)
    params = bad["cells"][2]
    params["source"] = "\n".join(ln for ln in _source(params).splitlines() if not ln.startswith("smoke"))
    assert any("smoke" in p for p in _new_problems(header_problems, good, bad, name=name))


def test_header_check_fires_when_the_title_is_not_first(lesson):
    name, good = lesson
    bad = copy.deepcopy(good)
    bad["cells"].insert(0, bad["cells"].pop(2))
    assert _new_problems(header_problems, good, bad, name=name)


def test_kernelspec_check_fires_on_a_personal_kernel(lesson):
    _, good = lesson
    bad = copy.deepcopy(good)
    bad["metadata"]["kernelspec"] = {"name": "conda-env-cxr-py", "display_name": "cxr", "language": "python"}
    assert _new_problems(kernelspec_problems, good, bad)


def test_size_check_fires_on_a_large_figure(lesson, tmp_path):
    name, good = lesson
    bad = copy.deepcopy(good)
    _code_cell_after_parameters(bad)["outputs"].append(
        {"output_type": "display_data", "metadata": {}, "data": {"image/png": _noise_png(300, 300), "text/plain": "x"}}
    )
    new = _new_size_problems(good, bad, tmp_path / name)
    assert any("image/png" in p for p in new)


def test_size_check_fires_on_a_large_file(lesson, tmp_path):
    name, good = lesson
    bad = copy.deepcopy(good)
    cell = _code_cell_after_parameters(bad)
    for _ in range(20):  # twenty figures, each well under the per-image limit
        cell["outputs"].append({"output_type": "display_data", "metadata": {},
                                "data": {"image/png": _noise_png(160, 160), "text/plain": "x"}})
    new = _new_size_problems(good, bad, tmp_path / name)
    assert any("file is" in p for p in new) and not any("image/png" in p for p in new)


@pytest.mark.parametrize("leak", ["/work/main/data/curated/manifest.csv", "/root/.keras/models", "/tmp/tmpa1b2/x.png",
                                  "/home/alice/cxr", "C:\\Users\\alice\\cxr"])
def test_machine_check_fires_on_an_absolute_path_in_an_output(lesson, leak):
    _, good = lesson
    bad = copy.deepcopy(good)
    _code_cell_after_parameters(bad)["outputs"].append(
        {"output_type": "stream", "name": "stdout", "text": [f"wrote {leak}\n"]}
    )
    assert _new_problems(machine_detail_problems, good, bad)


def test_machine_check_fires_on_an_absolute_path_in_metadata(lesson):
    _, good = lesson
    bad = copy.deepcopy(good)
    bad["metadata"].setdefault("papermill", {})["input_path"] = "/work/main/notebooks/01_x.ipynb"
    assert any("notebook metadata" in p for p in _new_problems(machine_detail_problems, good, bad))


def test_machine_check_fires_on_the_hostname_in_an_output(lesson):
    _, good = lesson
    bad = copy.deepcopy(good)
    hostname = "cxr-build-node-7"  # stands in for socket.gethostname(), which may be too generic here
    _code_cell_after_parameters(bad)["outputs"].append(
        {"output_type": "stream", "name": "stderr", "text": f"I0000 {hostname}: device CPU:0\n"}
    )
    assert any(hostname in p for p in _new_problems(machine_detail_problems, good, bad, hostname=hostname))


def test_a_broken_lesson_fails_the_whole_check(lesson, tmp_path):
    name, good = lesson
    bad = copy.deepcopy(good)
    _code_cells(bad)[-1]["execution_count"] = None
    path = tmp_path / name
    path.write_text(json.dumps(bad, indent=1))
    good_path = tmp_path / "good" / name
    good_path.parent.mkdir()
    good_path.write_text(json.dumps(good, indent=1))
    assert any("was not executed" in p for p in set(notebook_problems(path)) - set(notebook_problems(good_path)))


def test_widget_state_that_no_output_shows_is_a_problem_and_clean_metadata_drops_it():
    nb = load(NOTEBOOKS / "04_loss_and_label_smoothing.ipynb")
    assert not widget_state_problems(nb)
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    assert widget_state_problems(nb)
    assert not widget_state_problems(lessons.clean_metadata(nb)) and "widgets" not in nb["metadata"]
    shown = copy.deepcopy(nb)
    shown["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    [c for c in shown["cells"] if c["cell_type"] == "code"][-1]["outputs"].append(
        {"output_type": "display_data", "metadata": {}, "data": {lessons.WIDGET_VIEW: {"model_id": "x"}}})
    assert not widget_state_problems(shown) and "widgets" in lessons.clean_metadata(shown)["metadata"]
