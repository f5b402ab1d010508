"""Stage ``preprocess``: strip HTML and normalise whitespace."""

from __future__ import annotations

import html
import logging
import re
from html.parser import HTMLParser
from typing import Any

log = logging.getLogger("autoglm.text_cleaner")

_SPACES = re.compile(r"\s+")


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def strip_html(text: str) -> str:
    parser = _TextOnly()
    parser.feed(text)
    parser.close()
    return html.unescape(" ".join(parser.parts))


def invoke(envelope: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    text = str(envelope["payload"])
    before = len(text)
    if config.get("remove_html", True):
        text = strip_html(text)
    text = _SPACES.sub(" ", text).strip()
    log.info(
        "cleaned text: %d -> %d chars (remove_html=%s)",
        before,
        len(text),
        config.get("remove_html"),
    )
    return {**envelope, "payload": text}
