"""Report text -> (section, sentence) pairs, and the section a sentence belongs to.

WHY: neighbours' reports, VLM outputs and references come as free text, sometimes with section headings
("Lungs: ...", "HEART:" on its own line), sometimes as one paragraph. Consensus, evaluation and the draft all
need the same sentences in the same sections.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .catalog import SECTIONS, find_finding

# A heading: up to four words at the start of a line followed by ':' (the rest of the line is text).
_HEADING = re.compile(r"^\s*([A-Za-z][A-Za-z /&\-]{0,40}?)\s*:\s*(.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=[\"'(\[]?[A-Z0-9])")

# Word starts -> section, for sentences under no (known) heading; first match wins.
SECTION_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Heart", ("heart", "cardi", "pericard", "coronar", "aort", "atri", "ventric", "valv")),
    ("Gastrointestinal", ("esophag", "oesophag", "stomach", "gastr", "bowel", "colon", "hiatal", "duoden")),
    ("Liver", ("liver", "hepat", "gallbladder", "biliar", "portal vein")),
    ("Spleen", ("spleen", "splen")),
    ("Kidneys", ("kidney", "renal", "adrenal", "ureter")),
    (
        "Bones",
        ("bone", "vertebra", "rib", "spine", "spinal", "osseous", "fracture", "stern", "osteo", "lytic"),
    ),
    ("Lungs", ("lung", "pulmon", "bronch", "pleur", "lobe", "trache", "airway", "alveol", "nodul", "mass")),
)


def heading_section(heading: str, sections: Sequence[str] = SECTIONS) -> str | None:
    """The section a heading names ('LUNGS', 'Lungs and pleura' -> 'Lungs'), or None."""
    words = heading.strip().lower()
    for name in sections:
        if words == name.lower() or words.startswith(name.lower() + " "):
            return name
    return None


def split_sentences(text: str) -> list[str]:
    """Sentences of one paragraph ('12.5 mm' is not split; '; ' ends a sentence)."""
    out = []
    for piece in _SENTENCE_END.split(" ".join(text.split())):
        piece = piece.strip().rstrip(";").strip()
        if re.search(r"[A-Za-z]", piece):
            out.append(piece if piece[-1] in ".!?" else piece + ".")
    return out


def split_report(text: str, sections: Sequence[str] = SECTIONS) -> list[tuple[str | None, str]]:
    """(section or None, sentence) in reading order; a heading line sets the section for what follows."""
    out: list[tuple[str | None, str]] = []
    current: str | None = None
    for line in (text or "").splitlines():
        current, line = _strip_headings(line, current, sections)
        out += [(current, s) for s in split_sentences(line)]
    return out


def _strip_headings(line: str, current: str | None, sections: Sequence[str]) -> tuple[str | None, str]:
    """(section, text) of one line after its leading headings: "Findings: Lungs: No nodules." and
    "Liver: Liver: normal." both leave only the statement, so a draft never repeats a heading. A known heading
    sets the section; an unknown one alone on its line ("Findings:") resets to "classify by content"; an
    unknown one with text stays part of the text unless a known heading follows it."""
    stripped = False
    while (m := _HEADING.match(line)) and len(m.group(1).split()) <= 4:
        named, rest = heading_section(m.group(1), sections), m.group(2)
        if named is not None:
            current, line, stripped = named, rest, True
        elif not rest.strip():
            return None, rest
        elif (inner := _HEADING.match(rest)) and heading_section(inner.group(1), sections) is not None:
            line = rest
        else:
            break
    return current, (line[:1].upper() + line[1:]) if stripped else line


def strip_heading(sentence: str, section: str) -> str:
    """``sentence`` without a leading "<section>:" (any case), capitalised: what a sentence reads under its
    section's own heading ("Liver: volume 1.0 mL" under "Liver:" -> "Volume 1.0 mL")."""
    m = re.match(r"\s*" + re.escape(section) + r"\s*:\s*(\S.*)$", sentence, re.IGNORECASE | re.DOTALL)
    if m is None:
        return sentence
    rest = m.group(1)
    return rest[:1].upper() + rest[1:]


def section_of_text(sentence: str, findings: Sequence[str] = (), sections: Sequence[str] = SECTIONS) -> str:
    """The section for a sentence under no heading: its first catalogue finding's section, else anatomy words,
    else the last section ('Other')."""
    for name in findings:
        known = find_finding(name)
        if known is not None and known.section in sections:
            return known.section
    low = sentence.lower()
    for section, words in SECTION_KEYWORDS:
        if section in sections and any(re.search(r"\b" + w, low) for w in words):
            return section
    return sections[-1]
