"""`voxelfm` console script and the Slicer headless entry point share this parser.

Each command lives in its own module, declared there with `common.command`; its handler returns an
exit status. Errors meant for users (VoxelFMError) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from ..capabilities import command_modules
from ..errors import VoxelFMError
from .common import commands_of

# Modules that each add one or more sub-commands, from the capability table. Order = order in --help.
COMMAND_MODULES = command_modules()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxelfm",
        description="VoxelFM 3D CT foundation model: features, probes, few-shot segmentation, pretraining.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for (
        name
    ) in COMMAND_MODULES:  # a missing module is a packaging mistake: fail, never a shorter command list
        for command in commands_of(importlib.import_module(name)):
            command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _one_line_warnings()
            return int(args.func(args) or 0)
    except VoxelFMError as exc:
        print(f"voxelfm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (
        OSError
    ) as exc:  # the file system said no (permissions, disk full, read-only mount): say which file
        print(f"voxelfm {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"voxelfm {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line_warnings():
    """Warnings as one "WARNING: ..." log line each, every message once per run (the same check may warn when
    the image is read and again when it is prepared; a user needs no source line of ours)."""
    seen: set[str] = set()
    log = logging.getLogger("voxelfm")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).strip()
        if text not in seen:
            seen.add(text)
            log.warning("%s", text)

    return show


def describe_os_error(exc: OSError) -> str:
    """What the file system refused, naming the file and what to do."""
    where = " ".join(str(f) for f in (exc.filename, exc.filename2) if f) or "a file"
    why = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        fix = "check its permissions, or choose a location you can write to"
    elif exc.errno == errno.EROFS:
        fix = "the file system is read-only; choose another location"
    elif exc.errno == errno.ENOSPC:
        fix = "free some disk space, or choose another location"
    else:
        fix = "check the path"
    return f"{why}: {where}; {fix}."


if __name__ == "__main__":
    sys.exit(main())
