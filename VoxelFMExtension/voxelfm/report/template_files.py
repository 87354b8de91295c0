"""Loading report templates (YAML or JSON) and checking them: everything is validated at load time.

An unknown key, a sentence naming an unknown ``{field}``, a bad format spec or bad thresholds is an InputError
naming the file, the entry and the known fields, so a user's edited copy fails before any model is loaded.
Shipped templates live in Resources/report_templates (found like the model registry, ``hub.resources``).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files.documents import read_mapping
from ..hub.resources import resources_dir
from .catalog import normalise_name
from .template import (
    DEFAULT_SENTENCES,
    HEADING_FIELDS,
    SENTENCE_FIELDS,
    ReportTemplate,
    TemplateSection,
    Thresholds,
)

DEFAULT_TEMPLATE = "chest_ct"
TEMPLATE_SUFFIXES = (".yaml", ".yml", ".json")
TOP_KEYS = {
    "format_version",
    "name",
    "title",
    "heading",
    "include_absent",
    "thresholds",
    "sentences",
    "sections",
}
SECTION_KEYS = {"name", "findings", "segments", "normal"}


def templates_dir() -> Path:
    return resources_dir() / "report_templates"


def list_templates() -> list[str]:
    """Names of the templates shipped in Resources/report_templates."""
    try:
        folder = templates_dir()
    except FileNotFoundError:
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in TEMPLATE_SUFFIXES)


def _template_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in TEMPLATE_SUFFIXES or path.exists():
        if not path.is_file():
            raise InputError(f"Report template {path} not found.")
        return path
    for suffix in TEMPLATE_SUFFIXES:
        candidate = templates_dir() / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    raise InputError(
        f"No report template named {str(name_or_path)!r}; shipped templates: {', '.join(list_templates())}. "
        "Pass a .yaml file path for your own."
    )


def load_template(name_or_path: str | Path | None = None) -> ReportTemplate:
    """A shipped template by name (default chest_ct) or a template file, fully validated."""
    path = _template_path(name_or_path or DEFAULT_TEMPLATE)
    return template_from_dict(template_mapping(path), str(path))


def template_mapping(path: Path) -> Any:
    """The parsed (not yet validated) contents of a template file: what ``template_from_dict`` takes, and what
    travels to a server in place of a file of this computer."""
    syntax = "JSON" if path.suffix == ".json" else "YAML"
    return read_mapping(
        path, InputError, "report template", "fix the file or pass another --template", syntax=syntax
    )


def _check_format(where: str, text: Any, fields: dict[str, Any]) -> str:
    if not isinstance(text, str):
        raise InputError(f"{where} must be a text, got {type(text).__name__}.")
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise InputError(f"{where}: {exc} (write a literal brace as {{{{ or }}}}).") from exc
    unknown = sorted(u for u in used if u.split(".")[0].split("[")[0] not in fields)
    if unknown:
        raise InputError(
            f"{where} uses unknown field(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"known fields: {', '.join('{' + k + '}' for k in fields)}."
        )
    try:
        text.format(**fields)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise InputError(f"{where}: bad format ({exc}).") from exc
    return text


def _unknown_keys(where: str, raw: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}."
        )


def _thresholds(where: str, raw: Any) -> Thresholds:
    if raw is None:
        return Thresholds()
    if not isinstance(raw, dict) or set(raw) - {"present", "absent"}:
        raise InputError(f"{where}: 'thresholds' takes only 'present' and 'absent' (probabilities).")
    t = Thresholds(float(raw.get("present", 0.6)), float(raw.get("absent", 0.4)))
    if not 0.0 <= t.absent <= t.present <= 1.0:
        raise InputError(f"{where}: thresholds need 0 <= absent <= present <= 1, got {t}.")
    return t


def _section(where: str, raw: Any) -> TemplateSection:
    if not isinstance(raw, dict) or not str(raw.get("name") or "").strip():
        raise InputError(f"{where}: each section needs a 'name'.")
    _unknown_keys(f"{where} ({raw['name']})", raw, SECTION_KEYS)
    lists = {}
    for key in ("findings", "segments"):
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{where} ({raw['name']}): '{key}' must be a list of names.")
        lists[key] = value
    normal = _check_format(f"{where} ({raw['name']}): 'normal'", raw.get("normal") or "", {})
    return TemplateSection(
        str(raw["name"]).strip(),
        tuple(normalise_name(f) for f in lists["findings"]),
        tuple(p.strip().lower() for p in lists["segments"]),
        normal,
    )


def template_from_dict(raw: Any, source: str = "<template>") -> ReportTemplate:
    """Validate a parsed template; every problem names ``source`` and the entry."""
    if not isinstance(raw, dict):
        raise InputError(f"Report template {source} must be a mapping of keys (see chest_ct.yaml).")
    _unknown_keys(f"Report template {source}", raw, TOP_KEYS)
    if raw.get("format_version", 1) != 1:
        raise InputError(
            f"Report template {source}: format_version {raw['format_version']} is not supported (1)."
        )
    sentences = dict(DEFAULT_SENTENCES)
    given = raw.get("sentences") or {}
    if not isinstance(given, dict):
        raise InputError(f"Report template {source}: 'sentences' must map kinds to texts.")
    _unknown_keys(f"Report template {source}: sentences", given, set(SENTENCE_FIELDS))
    for kind, text in given.items():
        sentences[kind] = _check_format(
            f"Report template {source}: sentence '{kind}'", text, SENTENCE_FIELDS[kind]
        )
    sections_raw = raw.get("sections")
    if not isinstance(sections_raw, list) or not sections_raw:
        raise InputError(f"Report template {source}: 'sections' must list at least one section.")
    sections = tuple(
        _section(f"Report template {source}: section {n + 1}", s) for n, s in enumerate(sections_raw)
    )
    names = [s.name for s in sections]
    if len(set(names)) != len(names):
        raise InputError(f"Report template {source}: section names repeat ({', '.join(names)}).")
    heading = _check_format(
        f"Report template {source}: 'heading'", raw.get("heading", "{section}:"), HEADING_FIELDS
    )
    return ReportTemplate(
        name=str(raw.get("name") or Path(source).stem),
        sections=sections,
        title=_check_format(f"Report template {source}: 'title'", raw.get("title") or "", {}),
        heading=heading,
        include_absent=bool(raw.get("include_absent", False)),
        thresholds=_thresholds(f"Report template {source}", raw.get("thresholds")),
        sentences=sentences,
        source=source,
    )
