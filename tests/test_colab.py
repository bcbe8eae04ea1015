"""Every lesson opens in Colab from its badge, and its setup cell acts only there.

The badges and the Colab setup cell come from one setting, ``[tool.cxr-course] repository`` in
pyproject.toml, written into every lesson by ``tools/notebooks.py``. These tests check the
committed lessons against that setting (read here independently of the tool), execute each
committed setup cell in a fresh interpreter with and without a fake ``google.colab`` module
(recording, never running, what it would launch), and run the tool on a temporary copy of the
course to show that ``sync --repository`` repoints everything, is idempotent, and that ``check``
notices a stale badge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from cxr_utils import colab
from cxr_utils import lessons as lessons_module

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
BADGE_HREF = re.compile(r'<a href="([^"]+)"[^>]*>\s*<img src="https://colab\.research\.google\.com/assets/colab-badge\.svg"')


def lesson_params():
    """Parametrize over the committed lessons; a single failing case when there are none."""
    if not LESSONS:
        return [pytest.param(None, id="no-lessons")]
    return [pytest.param(p, id=p.name) for p in LESSONS]


def require(path: Path | None) -> Path:
    if path is None:
        pytest.fail("no lessons notebooks/NN_*.ipynb: the course must have lessons")
    return path


def repository(pyproject: Path = REPO / "pyproject.toml") -> str:
    with pyproject.open("rb") as fh:
        return tomllib.load(fh)["tool"]["cxr-course"]["repository"]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def setup_cell_source(nb: dict) -> str:
    cells = [c for c in nb["cells"] if "setup" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged 'setup', found {len(cells)}"
    return source(cells[0])


def source_of_code(nb: dict) -> str:
    """The lesson's own code: every code cell but the generated setup cell."""
    return "\n".join(source(c) for c in nb["cells"]
                     if c["cell_type"] == "code" and "setup" not in c.get("metadata", {}).get("tags", []))


def badge_hrefs(nb: dict) -> list[str]:
    return [h for c in nb["cells"] if c["cell_type"] == "markdown" for h in BADGE_HREF.findall(source(c))]


# --- badges --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", lesson_params())
def test_lesson_opens_with_a_colab_badge_pointing_at_itself_in_the_course_repository(path):
    path = require(path)
    nb = load(path)
    expected = f"https://colab.research.google.com/github/{repository()}/blob/main/notebooks/{path.name}"
    assert nb["cells"][0]["cell_type"] == "markdown", "the first cell must be the title cell with the badge"
    assert BADGE_HREF.findall(source(nb["cells"][0])) == [expected], (
        f"{path.name}: first cell's badge should point at {expected} (run tools/notebooks.py sync)"
    )
    assert badge_hrefs(nb) == [expected], f"{path.name}: more than one Colab badge: {badge_hrefs(nb)}"
    # the badge's path, relative to the repository root, is the lesson itself
    assert (REPO / expected.split("/blob/main/", 1)[1]).resolve() == path.resolve()


# --- the setup cell, executed in a fresh interpreter ---------------------------------------------

# Runs a setup cell's source with subprocess/os.system/os.chdir replaced by recorders, optionally
# with a fake google.colab module and a pretend-empty /content, and prints what happened as JSON.
DRIVER = r'''
import json, os, subprocess, sys, types

args = json.loads(open(sys.argv[1], encoding="utf-8").read())
calls = []

def recorder(kind):
    def fake(*a, **k):
        cmd = a[0] if a else k.get("args")
        calls.append({"kind": kind, "cmd": [str(x) for x in cmd] if isinstance(cmd, (list, tuple)) else str(cmd),
                      "check": k.get("check")})
        if kind.endswith("Popen"):
            raise RuntimeError("the setup cell must not start background processes")
        return 0 if kind == "os.system" else subprocess.CompletedProcess(cmd, 0, "", "")
    return fake

for name in ("run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"):
    setattr(subprocess, name, recorder("subprocess." + name))
for name in ("system", "chdir", "execv", "execvp", "execve", "spawnv", "spawnvp", "startfile", "popen"):
    if hasattr(os, name):
        setattr(os, name, recorder("os." + name))

# The package's own setup (quiet TensorFlow import, figure dpi) is recorded, not run: it is tested
# in tests/test_notebook_setup.py, and importing TensorFlow here would cost seconds per lesson.
import cxr_utils
fake_setup = types.ModuleType("cxr_utils.notebook")
fake_setup.setup = lambda *a, **k: calls.append({"kind": "cxr_utils.notebook.setup", "cmd": [], "check": None})
cxr_utils.notebook = fake_setup
sys.modules["cxr_utils.notebook"] = fake_setup
# On Colab the cell hands over to cxr_utils.colab.prepare (tested for real below): recorded here.
fake_colab = types.ModuleType("cxr_utils.colab")
fake_colab.prepare = lambda *a, **k: calls.append({"kind": "cxr_utils.colab.prepare", "cmd": [], "check": None,
                                                   "kwargs": k})
cxr_utils.colab = fake_colab
sys.modules["cxr_utils.colab"] = fake_colab

real_isdir, real_exists = os.path.isdir, os.path.exists
if args["colab"]:
    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    sys.modules["google"], sys.modules["google.colab"] = google, google.colab
    # a fresh Colab runtime: nothing under /content yet, unless the clone is said to exist
    on_content = lambda p: str(p).startswith("/content/")
    os.path.isdir = lambda p: args["clone_exists"] if on_content(p) else real_isdir(p)
    os.path.exists = lambda p: args["clone_exists"] if on_content(p) else real_exists(p)

cwd, path_before, env_before = os.getcwd(), list(sys.path), dict(os.environ)
namespace = {"__name__": "__main__"}
exec(compile(args["source"], "<setup cell>", "exec"), namespace)
print(json.dumps({
    "calls": calls,
    "cwd_changed": os.getcwd() != cwd,
    "sys_path_added": [p for p in sys.path if p not in path_before],
    "env_changed": sorted(k for k in set(os.environ) | set(env_before) if os.environ.get(k) != env_before.get(k)),
    "names": sorted(k for k in namespace if not k.startswith("__")),
}))
'''


def run_setup_cell(cell_source: str, tmp_path: Path, colab: bool, clone_exists: bool = False) -> dict:
    """Execute ``cell_source`` in a fresh interpreter from an empty directory; return what it did."""
    (tmp_path / "args.json").write_text(json.dumps({"source": cell_source, "colab": colab,
                                                    "clone_exists": clone_exists}))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "args.json")], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"the setup cell raised:\n{proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["files_created"] = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    return result


@pytest.mark.parametrize("path", lesson_params())
def test_setup_cell_outside_colab_only_calls_the_package_setup(path, tmp_path):
    path = require(path)
    clone_before = Path("/content").exists()
    did = run_setup_cell(setup_cell_source(load(path)), tmp_path, colab=False)
    kinds = [c["kind"] for c in did["calls"]]
    assert kinds == ["cxr_utils.notebook.setup"], f"{path.name}: the setup cell ran {did['calls']} outside Colab"
    assert not did["cwd_changed"], f"{path.name}: the setup cell changed directory outside Colab"
    assert did["files_created"] == [], f"{path.name}: the setup cell created {did['files_created']}"
    assert did["sys_path_added"] == [], f"{path.name}: the setup cell changed sys.path: {did['sys_path_added']}"
    assert did["env_changed"] == [], f"{path.name}: environment changes {did['env_changed']}"
    assert Path("/content").exists() == clone_before, f"{path.name}: the setup cell created /content"
    assert "os" in did["names"], f"{path.name}: the setup cell must import os (the parameters cell uses it)"


@pytest.mark.parametrize("path", lesson_params())
def test_setup_cell_on_colab_clones_the_course_repository_installs_it_and_prepares_the_lesson(path, tmp_path):
    path = require(path)
    did = run_setup_cell(setup_cell_source(load(path)), tmp_path, colab=True)
    runs = [c["cmd"] for c in did["calls"] if c["kind"] == "subprocess.run"]
    assert all(c["check"] is True for c in did["calls"] if c["kind"] == "subprocess.run"), (
        f"{path.name}: every Colab command should use check=True so a failure stops the lesson"
    )
    clones = [c for c in runs if c[:2] == ["git", "clone"]]
    assert len(clones) == 1, f"{path.name}: expected one git clone on a fresh Colab runtime, got {runs}"
    url, clone_dir = clones[0][-2:]
    assert url == f"https://github.com/{repository()}.git", f"{path.name}: clones {url}, not the repository setting"
    assert clone_dir.startswith("/content/")
    installs = [c for c in runs if c[1:4] == ["-m", "pip", "install"]]
    assert any(c[-2:] == ["-e", clone_dir] for c in installs), f"{path.name}: the clone is not pip-installed: {runs}"
    prepared = [c["kwargs"] for c in did["calls"] if c["kind"] == "cxr_utils.colab.prepare"]
    reads_images = path.name not in lessons_module.DATA_FREE
    assert prepared == [{"needs_data": reads_images}], f"{path.name}: prepare called as {prepared}"
    chdirs = [c["cmd"] for c in did["calls"] if c["kind"] == "os.chdir"]
    assert chdirs == [f"{clone_dir}/notebooks"], f"{path.name}: should work from the clone's notebooks/: {chdirs}"
    assert clone_dir in did["sys_path_added"], f"{path.name}: the clone should be importable in the kernel"
    leftovers = [c for c in did["calls"] if c["kind"] not in ("subprocess.run", "os.chdir", "cxr_utils.notebook.setup",
                                                              "cxr_utils.colab.prepare")]
    assert leftovers == [], f"{path.name}: unexpected calls {leftovers}"
    assert did["files_created"] == []


def test_the_lessons_that_fetch_nothing_on_colab_read_no_images():
    for name in lessons_module.DATA_FREE:
        text = source_of_code(load(REPO / "notebooks" / name))
        for reader in ("load_manifest", "load_split", "make_dataset", "read_image", "preprocess.read"):
            assert reader not in text, f"{name} calls {reader} but its setup cell fetches no data on Colab"


@pytest.mark.parametrize("path", lesson_params())
def test_setup_cell_rerun_on_colab_does_not_clone_again(path, tmp_path):
    path = require(path)
    did = run_setup_cell(setup_cell_source(load(path)), tmp_path, colab=True, clone_exists=True)
    runs = [c["cmd"] for c in did["calls"] if c["kind"] == "subprocess.run"]
    assert not [c for c in runs if c[:2] == ["git", "clone"]], f"{path.name}: cloned again: {runs}"
    assert not [c for c in runs if c[1:4] == ["-m", "pip", "install"]], f"{path.name}: reinstalled: {runs}"


# --- the tool, on a temporary copy of the course -------------------------------------------------


@pytest.fixture
def tool(tmp_path):
    """A copy of pyproject.toml and the lessons in tmp_path, and ``tools/notebooks.py --root tmp_path``."""
    if not LESSONS:
        pytest.fail("no lessons notebooks/NN_*.ipynb to run the tool on: the course must have lessons")
    (tmp_path / "notebooks").mkdir()
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for path in LESSONS:
        shutil.copy2(path, tmp_path / "notebooks" / path.name)
    return SimpleNamespace(REPO=tmp_path, NOTEBOOKS=tmp_path / "notebooks")


def run_tool(tool, *argv: str) -> subprocess.CompletedProcess:
    """Run ``tools/notebooks.py --root <copy> ARGV`` as a user would; return the finished process."""
    return subprocess.run([sys.executable, str(REPO / "tools" / "notebooks.py"), "--root", str(tool.REPO), *argv],
                          capture_output=True, text=True, timeout=120)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


FORK = "a-teacher/cxr-course-fork"


def test_sync_with_a_new_repository_repoints_the_setting_every_badge_and_every_setup_cell(tool):
    root, old = tool.REPO, repository()
    before = snapshot(root)
    assert run_tool(tool, "sync", "--repository", FORK).returncode == 0
    assert repository(root / "pyproject.toml") == FORK
    changed = [(a, b) for a, b in zip(before["pyproject.toml"].decode().splitlines(),
                                      (root / "pyproject.toml").read_text().splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and "repository" in changed[0][1], f"sync changed more of pyproject.toml: {changed}"
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb, orig = load(path), json.loads(before[f"notebooks/{path.name}"])
        assert badge_hrefs(nb) == [f"https://colab.research.google.com/github/{FORK}/blob/main/notebooks/{path.name}"]
        assert f"https://github.com/{FORK}.git" in setup_cell_source(nb)
        assert old not in path.read_text(), f"{path.name} still mentions {old}"
        # everything but the badge line and the setup cell is the author's and stays as it was
        keep = [i for i, c in enumerate(orig["cells"]) if i and "setup" not in c.get("metadata", {}).get("tags", [])]
        def as_text(cell: dict) -> dict:  # a source stored as a string or as a list of lines is the same text
            return {**cell, "source": source(cell)}

        assert [as_text(nb["cells"][i]) for i in keep] == [as_text(orig["cells"][i]) for i in keep], (
            f"sync altered {path.name}")
        title_lines = [ln for ln in source(nb["cells"][0]).splitlines() if "colab-badge" not in ln]
        assert title_lines == [ln for ln in source(orig["cells"][0]).splitlines() if "colab-badge" not in ln]
    assert run_tool(tool, "check").returncode == 0


def test_sync_is_idempotent(tool):
    assert run_tool(tool, "sync", "--repository", FORK).returncode == 0
    once = snapshot(tool.REPO)
    assert run_tool(tool, "sync").returncode == 0
    assert run_tool(tool, "sync", "--repository", FORK).returncode == 0
    assert snapshot(tool.REPO) == once


def test_check_fails_when_a_badge_is_stale(tool):
    assert run_tool(tool, "check").returncode == 0, "the committed lessons should be in step to begin with"
    stale = LESSONS[0].name
    assert run_tool(tool, "sync", "--repository", FORK).returncode == 0
    shutil.copy2(LESSONS[0], tool.NOTEBOOKS / stale)  # one lesson still points at the old repository
    checked = run_tool(tool, "check")
    assert checked.returncode == 1
    report = checked.stdout
    assert stale in report and "badge" in report.lower(), report
    assert all(p.name not in report for p in LESSONS[1:]), f"only {stale} is stale:\n{report}"


def test_sync_refuses_a_repository_that_is_not_owner_slash_name(tool):
    before = snapshot(tool.REPO)
    refused = run_tool(tool, "sync", "--repository", "https://github.com/x/y")
    assert refused.returncode == 2 and "OWNER/NAME" in refused.stderr
    assert snapshot(tool.REPO) == before


# --- what the setup cell hands over to on Colab: cxr_utils.colab, run for real ---------------------


def test_version_warnings_name_each_package_whose_version_is_not_the_pinned_one(tmp_path):
    assert colab.version_warnings() == []  # the course's own environment has exactly the pins
    text = (REPO / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace('"keras==3.15.1"', '"keras==3.0.0"'))
    assert colab.version_warnings(tmp_path) == ["keras 3.15.1 (the course pins 3.0.0)"]


@pytest.fixture
def no_kaggle(monkeypatch, tmp_path):
    """An environment with no Kaggle token anywhere and no mirror, and an empty data folder."""
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "CXR_DATA_MIRROR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_a_kaggle_token_is_found_where_kaggle_looks_and_in_colab_secrets(no_kaggle, monkeypatch):
    assert colab.kaggle_credentials() is None
    (no_kaggle / "kaggle").mkdir()
    (no_kaggle / "kaggle" / "kaggle.json").write_text('{"username": "someone"}')  # no key: not a token
    assert colab.kaggle_credentials() is None
    (no_kaggle / "kaggle" / "kaggle.json").write_text('{"username": "someone", "key": "abc"}')
    assert colab.kaggle_credentials() == str(no_kaggle / "kaggle" / "kaggle.json")
    (no_kaggle / "kaggle" / "kaggle.json").unlink()
    google, userdata = SimpleNamespace(), SimpleNamespace(get={"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}.get)
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", SimpleNamespace(userdata=userdata))
    assert colab.kaggle_credentials() == "Colab's secrets"
    assert os.environ["KAGGLE_USERNAME"] == "u" and os.environ["KAGGLE_KEY"] == "k"  # where kagglehub reads them
    assert colab.kaggle_credentials() == "the environment"


def test_prepare_asks_for_a_kaggle_token_before_downloading_anything(no_kaggle, monkeypatch):
    from cxr_utils import cli

    called = []
    monkeypatch.setattr(cli, "main", lambda argv: called.append(argv) or 0)
    with pytest.raises(RuntimeError, match="KAGGLE_USERNAME and KAGGLE_KEY"):
        colab.prepare(needs_data=True, show=lambda _: None)
    assert called == [] and not (no_kaggle / "data").exists()
    colab.prepare(needs_data=False, show=lambda _: None)  # a lesson that reads no images needs no token
    assert called == []
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    colab.prepare(needs_data=True, show=lambda _: None)
    assert called == [["fetch", "--quiet"], ["curate"]]
    (no_kaggle / "data" / "curated").mkdir(parents=True)
    (no_kaggle / "data" / "curated" / "manifest.csv").write_text("path\n")
    shown = []
    colab.prepare(needs_data=True, show=shown.append)  # a second lesson in the same session fetches nothing
    assert called == [["fetch", "--quiet"], ["curate"]] and "already fetched" in shown[-1]
