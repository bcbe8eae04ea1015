"""The ``cxr-data`` command: put the four sources in place, then build the manifest.

    cxr-data fetch [--mirror DIR] [--source KEY ...] [--quiet]
    cxr-data curate [--force]

Also runnable as ``python -m cxr_utils.cli ...``. Everything is written under ``CXR_DATA_DIR``
(:mod:`cxr_utils.paths`). Exit codes: 0 done (warnings allowed), 1 a source is not usable (the last
line says which and the command that fixes it), 2 a usage error (bad option, missing mirror folder).
User errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cxr_utils import paths, sources

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def _fail(message: str, code: int) -> int:
    print(f"cxr-data: error: {message}", file=sys.stderr)
    return code


def cmd_fetch(args: argparse.Namespace) -> int:
    """Fetch (or copy from a mirror) and verify the sources; print the verification table."""
    mirror = paths.mirror_dir(args.mirror)
    where = f"mirror {mirror}" if mirror else "GitHub and Kaggle"
    print(f"Fetching {', '.join(args.source or sources.SOURCES)} from {where} into {paths.raw_dir()}", flush=True)
    try:
        report = sources.fetch(args.source, mirror=args.mirror, progress=not args.quiet, workers=args.workers)
    except sources.MirrorError as exc:
        return _fail(str(exc), EXIT_USAGE)
    print(report.summary())
    if report.report_path is not None and any(s.report_rows() for s in report.statuses):
        print(f"Problems by file: {report.report_path.relative_to(paths.data_dir()).as_posix()} (under CXR_DATA_DIR)")
    return EXIT_OK if report.ok else EXIT_PROBLEM


def cmd_curate(args: argparse.Namespace) -> int:
    """Build ``curated/manifest.csv`` from the raw sources (:func:`cxr_utils.curation.curate`)."""
    try:
        from cxr_utils.curation import curate  # imported here: fetch must work without the curation stack
    except ModuleNotFoundError as exc:
        if exc.name != "cxr_utils.curation":
            raise
        return _fail("this version of cxr_utils has no curation module yet (cxr_utils/curation.py).", EXIT_PROBLEM)

    result = curate(root=None, force=args.force, progress=not args.quiet)
    print(result.summary())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``cxr-data`` (sub-commands ``fetch`` and ``curate``)."""
    parser = argparse.ArgumentParser(
        prog="cxr-data",
        description="Get the four chest X-ray sources of the course and curate them. "
        "Data goes under CXR_DATA_DIR (default: the repository's data/).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fetch,curate}")
    fetch = sub.add_parser(
        "fetch", help="download the sources (or copy them from a local mirror) and verify them",
        description="Put the sources in <CXR_DATA_DIR>/raw in their upstream layout and verify them. "
        "Files already in place are skipped, so running it again is quick.",
    )
    fetch.add_argument("--mirror", metavar="DIR",
                       help="copy from this local mirror (upstream layout) instead of the network "
                       "(default: $CXR_DATA_MIRROR if set)")
    fetch.add_argument("--source", action="append", choices=list(sources.SOURCES), metavar="KEY",
                       help=f"only this source (repeatable): {', '.join(sources.SOURCES)}; default: all")
    fetch.add_argument("--workers", type=int, default=8, help="parallel downloads from GitHub (default 8)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bars")
    fetch.set_defaults(func=cmd_fetch)
    curate = sub.add_parser("curate", help="build curated/manifest.csv from the raw sources",
                            description="Select, de-duplicate and split the images into curated/manifest.csv.")
    curate.add_argument("--force", action="store_true", help="rebuild even if the manifest is up to date")
    curate.add_argument("--quiet", action="store_true", help="no progress bars")
    curate.set_defaults(func=cmd_curate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cxr-data`` with ``argv`` (default: the command line); return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except sources.MissingSourceError as exc:
        return _fail(str(exc), EXIT_PROBLEM)
    except (sources.FetchError, sources.UnsafePathError) as exc:
        return _fail(str(exc), EXIT_PROBLEM)
    except KeyboardInterrupt:
        return _fail("interrupted; files being written were left as .part and never count as data. "
                     "Run the same command again to finish.", 130)


if __name__ == "__main__":
    sys.exit(main())
