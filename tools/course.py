#!/usr/bin/env python3
"""Set up the course and run it, or run its tests: the two commands of the README.

    python3 tools/course.py run     # set up, fetch + curate the data, execute every lesson
    python3 tools/course.py test    # set up, run the whole test suite

Both create ``.venv`` in the repository (once) and install the package with its pinned
dependencies into it. Only the standard library is used here, so this runs on a bare Python 3.11.

Options:
    --mirror DIR     read the sources from a local mirror instead of the network
                     (same as setting CXR_DATA_MIRROR=DIR)
    --external DIR   the external test collection (same as CXR_EXTERNAL_DIR=DIR): lessons 07-08 and the
                     tests that need it use it
    --lessons 01 03  run only these lessons (``run`` only)
    --quick          train short versions of the recipes (``cxr_utils.train.QUICK``: 3 epochs on at most 800
                     images per split) into their own run folders instead of the full reproduction
                     (``run`` only; results/ is never touched)
    --strategy S     train on several devices: ``mirrored`` (every GPU of this machine) (``run`` only)
    --no-venv        use the current interpreter (e.g. an activated conda env) instead of .venv

After fetching and curating, ``run`` hands over to ``python -m cxr_utils.lessons run``, which executes
the lessons with papermill into ``runs/notebooks/`` and shows the lesson, each training epoch (loss,
accuracy, seconds) and the time left by the lesson's own estimate; TensorFlow's and the kernel's
start-up noise is left out (it stays in the executed notebooks); an error shows the end of what the
lesson printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
STAMP = VENV / ".cxr-course-installed"


def say(msg: str) -> None:
    print(f"[course] {msg}", flush=True)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_environment(use_venv: bool) -> Path:
    """Create ``.venv`` and install ``cxr-course[dev]`` into it unless already done; return its python."""
    if not use_venv:
        return Path(sys.executable)
    if sys.version_info[:2] != (3, 11):
        say(f"warning: the course is pinned for Python 3.11; this is {sys.version.split()[0]}")
    py = venv_python()
    pyproject = REPO / "pyproject.toml"
    if STAMP.exists() and STAMP.read_text() == pyproject.read_text() and py.exists():
        say(f"environment ready ({VENV.relative_to(REPO)})")
        return py
    t0 = time.time()
    if not py.exists():
        say(f"creating {VENV.relative_to(REPO)} ...")
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    say("installing the course and its pinned dependencies (a few minutes the first time) ...")
    pip = [str(py), "-m", "pip", "--disable-pip-version-check"]
    log = VENV / "install.log"
    with log.open("w") as fh:  # pip's build chatter goes to a log; shown only if the install fails
        for args in (["install", "-q", "--upgrade", "pip"], ["install", "-q", "-e", f"{REPO}[dev]"]):
            if subprocess.run([*pip, *args], stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
                print(log.read_text()[-4000:])
                say(f"installing failed; the full log is {log.relative_to(REPO)}")
                sys.exit(1)
    STAMP.write_text(pyproject.read_text())
    say(f"environment ready in {time.time() - t0:.0f} s")
    return py


def run(cmd: list[str], env: dict[str, str]) -> None:
    """Run ``cmd`` from the repository root; exit with its code if it fails."""
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    if proc.returncode != 0:
        say(f"failed ({proc.returncode}): {' '.join(cmd)}")
        sys.exit(proc.returncode)


def cmd_run(args: argparse.Namespace, py: Path, env: dict[str, str]) -> None:
    t0 = time.time()
    fetch = [str(py), "-m", "cxr_utils.cli", "fetch"]
    if args.mirror:
        fetch += ["--mirror", args.mirror]
    run(fetch, env)
    run([str(py), "-m", "cxr_utils.cli", "curate"], env)
    cmd = [str(py), "-m", "cxr_utils.lessons", "run", *(args.lessons or [])]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--strategy", args.strategy] if args.strategy else []
    run(cmd, env)
    say(f"everything took {(time.time() - t0) / 60:.1f} min")


def cmd_test(args: argparse.Namespace, py: Path, env: dict[str, str]) -> None:
    if not env.get("CXR_DATA_MIRROR"):
        say("error: the tests read the offline data mirror. Set CXR_DATA_MIRROR=DIR or pass --mirror DIR")
        say("       (in a checkout next to the course's shared/ folder: --mirror ../shared/cxr-mirror).")
        sys.exit(2)
    workers = max(1, min(os.cpu_count() or 1, 4))  # each worker holds a TensorFlow session: 4 at most
    run([str(py), "-m", "pytest", "--nbval-lax", "-n", str(workers), *args.pytest_args], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("run", "set up and run the whole course"), ("test", "set up and run the tests")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--mirror", help="local mirror of the sources (default: $CXR_DATA_MIRROR)")
        p.add_argument("--external", help="the external test collection (default: $CXR_EXTERNAL_DIR)")
        p.add_argument("--no-venv", action="store_true", help="use this interpreter, not .venv")
        if name == "run":
            p.add_argument("--lessons", nargs="*", help="lesson numbers to run, e.g. 01 02")
            p.add_argument("--quick", action="store_true",
                           help="short versions of the recipes in their own run folders (results/ untouched)")
            p.add_argument("--strategy", choices=["mirrored"], help="train on every GPU of this machine")
        else:
            p.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    args = parser.parse_args()
    env = dict(os.environ)
    for name in ("CXR_DATA_DIR", "CXR_RUNS_DIR", "CXR_DATA_MIRROR", "CXR_EXTERNAL_DIR"):
        if env.get(name, "").strip():  # the lessons run in notebooks/: a relative path would point elsewhere there
            env[name] = str(Path(env[name].strip()).expanduser().resolve())
    if args.mirror:
        args.mirror = str(Path(args.mirror).expanduser().resolve())
        env["CXR_DATA_MIRROR"] = args.mirror
    if args.external:
        external = Path(args.external).expanduser().resolve()
        if not external.is_dir():
            say(f"error: --external {args.external}: no such folder")
            sys.exit(2)
        env["CXR_EXTERNAL_DIR"] = str(external)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    py = ensure_environment(use_venv=not args.no_venv)
    env["PATH"] = f"{py.parent}{os.pathsep}{env.get('PATH', '')}"
    {"run": cmd_run, "test": cmd_test}[args.command](args, py, env)


if __name__ == "__main__":
    main()
