"""A stand-in for an LLM findings extractor, loaded by name in the tests (``report_extractor_plugin:Keyword``)."""

from __future__ import annotations


class Keyword:
    """Calls 'Emphysema' present whenever the word appears (no negation): a deliberately different extractor."""

    name = "keyword"

    def extract(self, text: str) -> dict[str, str]:
        return {"Emphysema": "present"} if "emphysema" in text.lower() else {}
