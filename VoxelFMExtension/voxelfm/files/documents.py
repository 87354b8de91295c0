"""Reading a JSON or YAML file that people name or edit by hand, with errors they can act on.

WHY one reader: probe files, markups, model configs and training configs are all opened from a path the user
gave; a missing file, bad syntax or a list where an object belongs must each say which file, what is wrong
and what to do, with the caller's error class (InputError, CheckpointError) so the CLI prints it alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError

TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list"}


def describe(value: Any) -> str:
    """How a JSON value reads in a message: 'text' (a string), [1] (a list), null, true."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({TYPE_WORDS.get(type(value), type(value).__name__)})"


def read_mapping(
    path: str | os.PathLike,
    error: type[Exception],
    what: str,
    fix: str,
    missing: str | None = None,
    syntax: Literal["JSON", "YAML"] = "JSON",
) -> dict[str, Any]:
    """The object at the top of the file ``path``, else ``error`` naming the file, the problem and ``fix``.

    An empty YAML file reads as an empty mapping. ``what`` names the file's role in the messages ("probe file"); ``missing`` is what to do when the file is
    absent (default ``fix``). Messages read "<What> PATH not found; <missing>." and "PATH is not a readable
    <what>: <problem>; <fix>."
    """
    p = Path(path)
    if not p.is_file():
        raise error(f"{what[:1].upper()}{what[1:]} {p} not found; {missing or fix}.")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{p} is not a readable {what}: cannot read it as text ({exc}); {fix}.") from exc
    parse, syntax_error = _parser(syntax)
    try:
        data = parse(text)
    except syntax_error as exc:
        raise error(f"{p} is not a readable {what}: not valid {syntax} ({exc}); {fix}.") from exc
    if data is None and syntax == "YAML":
        data = {}  # an empty YAML file: nothing set
    if not isinstance(data, dict):
        kind = "mapping" if syntax == "YAML" else "object"
        raise error(
            f"{p} is not a readable {what}: expected a {syntax} {kind}, found {describe(data)}; {fix}."
        )
    return data


def _parser(syntax: str) -> tuple[Callable[[str], Any], type[Exception]]:
    """(parse, the error it raises on bad syntax); yaml is imported only for YAML files."""
    if syntax == "YAML":
        import yaml  # PyYAML only for .yaml documents (JSON needs none; this module is on torch-free paths)

        return yaml.safe_load, yaml.YAMLError
    return json.loads, json.JSONDecodeError


MAX_REPORT_BYTES = 1 << 20  # a radiology report is a few kB; 1 MiB is far above any real one


def check_report_text(text: str, where: str) -> str:
    """InputError when a report to store or read is above the cap (a log file or a book by mistake: it would
    slow every draft that reads the library)."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_REPORT_BYTES:
        raise InputError(
            f"{where}: the report is {size / 1e6:.1f} MB; reports above {MAX_REPORT_BYTES // 1024} kB are not "
            "stored (a radiology report is a few kB). Give the report text alone."
        )
    return text


def read_text_file(path: str | os.PathLike, what: str, limit: int | None = MAX_REPORT_BYTES) -> str:
    """A text file the user named (a report, a manifest): UTF-8, else InputError naming the file and the byte
    that is not UTF-8 (a Latin-1 export, a binary file) with how to fix it; above ``limit`` bytes refused."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if limit is not None and size > limit:
            raise InputError(
                f"{what} {p} is {size / 1e6:.1f} MB; reports above {limit // 1024} kB are not stored (a "
                "radiology report is a few kB). Give the report text alone."
            )
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{what} {p} not found.") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{what} {p} is a folder; give a text file.") from exc
    except OSError as exc:
        raise InputError(f"Cannot read {what} {p} ({exc.strerror or exc}).") from exc
    if b"\x00" in data[:8192]:
        raise InputError(f"{what} {p} is a binary file, not text; give a plain-text (UTF-8) file.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} {p} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as "
            "UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`) and run the command again."
        ) from exc
