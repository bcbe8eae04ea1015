"""The ``cxr-data`` command: put the four sources in place, then build the manifest.

    cxr-data fetch [--mirror DIR] [--source KEY ...] [--quiet]
    cxr-data curate [--force] [--quiet]

Also runnable as ``python -m cxr_utils.cli ...``. Everything is written under ``CXR_DATA_DIR``
(:mod:`cxr_utils.paths`). Every failure ends in one line on stderr, ``cxr-data: error: ...``, that
says what is wrong and what fixes it, never a traceback. Exit codes:

===  ==========================================================================================
0    done (warnings allowed)
1    the data is not usable as it is: a source missing or incomplete, a metadata file that cannot
     be read, a curation that would change the split written before, a folder that cannot be written
2    a usage error: a bad option, a mirror folder that does not exist
130  interrupted (Ctrl-C); nothing half-written is left behind, and running the command again finishes
===  ==========================================================================================
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from cxr_utils import fetch, paths, sources
from cxr_utils.curation import CurationChangedError, curate
from cxr_utils.metadata import MetadataError

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_FILE_ERRORS = {errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC, errno.EROFS,
                errno.EDQUOT}
"""What an unwritable data folder raises: no permission, a file where a folder should be, a full or read-only disk."""


def _fail(message: str, code: int) -> int:
    print(f"cxr-data: error: {message}", file=sys.stderr)
    return code


def cmd_fetch(args: argparse.Namespace) -> int:
    """Fetch (or copy from a mirror) and verify the sources; print the verification table."""
    mirror = paths.mirror_dir(args.mirror)
    where = f"mirror {mirror}" if mirror else "GitHub and Kaggle"
    print(f"Fetching {', '.join(args.source or sources.SOURCES)} from {where} into {paths.raw_dir()}", flush=True)
    try:
        report = fetch.fetch(args.source, mirror=args.mirror, progress=not args.quiet, workers=args.workers)
    except fetch.MirrorError as exc:
        return _fail(str(exc), EXIT_USAGE)
    print(report.summary())
    if report.report_path is not None and any(s.report_rows() for s in report.statuses):
        print(f"Problems by file: {report.report_path.relative_to(paths.data_dir()).as_posix()} (under CXR_DATA_DIR)")
    return EXIT_OK if report.ok else EXIT_PROBLEM


def cmd_curate(args: argparse.Namespace) -> int:
    """Build ``curated/manifest.csv`` from the raw sources (:func:`cxr_utils.curation.curate`)."""
    try:
        result = curate(root=None, force=args.force, progress=not args.quiet)
    except CurationChangedError as exc:
        return _fail(str(exc), EXIT_PROBLEM)
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
    except (fetch.FetchError, paths.UnsafePathError) as exc:
        return _fail(str(exc), EXIT_PROBLEM)
    except MetadataError as exc:
        return _fail(str(exc), EXIT_PROBLEM)
    except OSError as exc:
        if exc.errno not in _FILE_ERRORS:
            raise
        return _fail(f"cannot write '{exc.filename}' ({exc.strerror}). Make the data folder writable (and give it "
                     f"room), or set CXR_DATA_DIR to another folder (now {paths.data_dir()}).", EXIT_PROBLEM)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing half-written was left behind (files being written are only renamed "
                     "into place when complete). Run the same command again to finish.", EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
