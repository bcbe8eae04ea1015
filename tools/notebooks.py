#!/usr/bin/env python3
"""Keep every lesson's header in step, and execute lessons for commit.

Every lesson starts with the same header cells (the Colab badge, the ``setup`` cell, the author's
``parameters`` cell): what they are is described once, in :mod:`cxr_utils.lessons`, which writes them.

The badge and the Colab setup are generated from one setting, ``[tool.cxr-course] repository``
in ``pyproject.toml``, so a fork repoints every badge with one command:

    python tools/notebooks.py sync --repository YOU/your-fork   # rewrite the setting and every header
    python tools/notebooks.py sync                               # re-sync headers to the setting
    python tools/notebooks.py check                              # exit 1 if any header is out of step
    python tools/notebooks.py execute 01 02                      # run lessons in place (full parameters)
    python tools/notebooks.py execute 01 --solutions             # run lesson 01's solutions notebook in place

``execute`` runs papermill in place from the notebook's folder and then removes machine-specific metadata
(absolute paths) so the committed file shows results and nothing about the machine. It also writes the
run's time into the lesson's ``**Time:** N min`` (the one source of that number; the README's course map
is checked against it by ``tests/test_lesson_times.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cxr_utils.lessons import (
    REPO,
    LessonsError,
    clean_metadata,
    header_problems,
    lessons,
    load,
    repository_setting,
    save,
    set_repository_setting,
    solutions,
    synced,
    with_time,
)


def main(argv: list[str] | None = None) -> int:
    """Run the tool with ``argv`` (default: the command line); return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the course's folder (default: this repository)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_sync = sub.add_parser("sync", help="write badge and setup cell into every lesson")
    p_sync.add_argument("--repository", help="new OWNER/NAME to store in pyproject.toml first")
    sub.add_parser("check", help="exit 1 when a header is out of step")
    p_exec = sub.add_parser("execute", help="execute lessons in place with papermill")
    p_exec.add_argument("lessons", nargs="*", help="lesson numbers, e.g. 01 02 (default: all)")
    p_exec.add_argument("--solutions", action="store_true", help="execute the lessons' solutions notebooks instead")
    p_exec.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="papermill parameter (repeatable)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.cmd == "sync":
            if args.repository:
                set_repository_setting(args.repository, root)
            repo = repository_setting(root)
            for path in lessons(root=root):
                save(path, synced(load(path), path.name, repo))
            print(f"{len(lessons(root=root))} lessons point at github.com/{repo}")
        elif args.cmd == "check":
            repo = repository_setting(root)
            problems = [p for path in lessons(root=root) for p in header_problems(load(path), path.name, repo)]
            print("\n".join(problems) or f"all {len(lessons(root=root))} lesson headers in step with {repo}")
            return 1 if problems else 0
        else:
            repo = repository_setting(root)
            for path in (solutions if args.solutions else lessons)(args.lessons, root=root):
                if not args.solutions:
                    save(path, synced(load(path), path.name, repo))
                cmd = [sys.executable, "-m", "papermill", str(path), str(path), "--cwd", str(path.parent),
                       "--kernel", "python3", "--no-progress-bar"]
                for name, value in args.p:
                    cmd += ["-p", name, value]
                print(f"executing {path.name} ...", flush=True)
                subprocess.run(cmd, check=True)
                nb = clean_metadata(load(path))
                save(path, nb if args.solutions else with_time(nb))
    except LessonsError as exc:
        print(f"notebooks.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
