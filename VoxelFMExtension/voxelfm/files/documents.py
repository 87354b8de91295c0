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
        import yaml

        return yaml.safe_load, yaml.YAMLError
    return json.loads, json.JSONDecodeError
