"""The client's words in every language it speaks, from gettext message catalogues.

The catalogues are the ``.po`` files in ``ferry/client/locales/`` (one per language, the
format translators know). They are compiled when first used, by :func:`catalogue`, into a
:class:`Catalogue`: there is no committed binary ``.mo``. Message ids are short symbolic names
(``page.title``, ``check.broker.ok``), so that English is a translation like the others and a
test can check that every language has every message with the same ``{placeholders}``.

The language is chosen by :func:`choose_language`: ``--lang`` if given, else the system locale
(``LC_ALL``, ``LC_MESSAGES``, ``LANG``, in that order, as gettext reads them), else English.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ferry.errors import ConfigError

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "RIGHT_TO_LEFT",
    "Catalogue",
    "catalogue",
    "choose_language",
    "parse_po",
]

LOCALES = Path(__file__).parent / "locales"

LANGUAGES: dict[str, str] = {
    "en": "English",
    "zh_CN": "简体中文",
    "zh_TW": "繁體中文",
    "fa": "فارسی",
    "ru": "Русский",
}
"""Every language the client speaks: code → its own name for itself."""

DEFAULT_LANGUAGE = "en"
"""The language used when neither ``--lang`` nor the system locale names a known one."""

RIGHT_TO_LEFT = frozenset({"fa"})
"""Languages written right to left."""

_ALIASES = {
    "zh": "zh_CN",
    "zh_SG": "zh_CN",
    "zh_HANS": "zh_CN",
    "zh_HK": "zh_TW",
    "zh_MO": "zh_TW",
    "zh_HANT": "zh_TW",
}


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The compiled messages of one language."""

    language: str
    """Language code, one of :data:`LANGUAGES`."""
    messages: Mapping[str, str]
    """Message id → text, with ``{name}`` placeholders."""

    @property
    def right_to_left(self) -> bool:
        """Whether the language is written right to left."""
        return self.language in RIGHT_TO_LEFT

    def text(self, message_id: str, **values: object) -> str:
        """The message ``message_id`` with its placeholders filled in.

        A message missing from this language falls back to English, then to the id itself
        (the catalogue test makes sure neither happens).
        """
        template = self.messages.get(message_id)
        if template is None:
            template = catalogue(DEFAULT_LANGUAGE).messages.get(message_id, message_id)
        return template.format(**values) if values else template


def _normalise(code: str) -> str | None:
    """``zh-tw`` / ``zh_TW.UTF-8`` / ``fa_IR@calendar`` → a key of :data:`LANGUAGES`."""
    base = code.split(".", 1)[0].split("@", 1)[0].replace("-", "_").strip()
    if not base or base in ("C", "POSIX"):
        return None
    language, _, region = base.partition("_")
    language = language.lower()
    full = f"{language}_{region.upper()}" if region else language
    for candidate in (full, language):
        if candidate in LANGUAGES:
            return candidate
        if candidate in _ALIASES:
            return _ALIASES[candidate]
    return None


def choose_language(requested: str | None, environ: Mapping[str, str]) -> str:
    """The language to use: ``requested`` (``--lang``), else the locale, else English.

    Raises :class:`~ferry.errors.ConfigError` if ``requested`` names no known language.
    """
    if requested:
        language = _normalise(requested)
        if language is None:
            raise ConfigError(
                f"--lang {requested!r} is not a language ferry speaks; choose one of "
                + ", ".join(LANGUAGES)
            )
        return language
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(variable, "")
        if value:
            return _normalise(value) or DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def parse_po(text: str) -> dict[str, str]:
    """The ``msgid`` → ``msgstr`` pairs of a ``.po`` file (no plural forms, no contexts).

    Raises :class:`ValueError` naming the line of anything it does not understand.
    """
    messages: dict[str, str] = {}
    current: dict[str, str] = {}
    field = ""

    def finish() -> None:
        if "msgid" in current:
            if "msgstr" not in current:
                raise ValueError(f"msgid {current['msgid']!r} has no msgstr")
            if current["msgid"]:  # the empty id is the header
                messages[current["msgid"]] = current["msgstr"]
        current.clear()

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword in ("msgid", "msgstr"):
            if keyword == "msgid":
                finish()
            field = keyword
            line = rest.strip()
        elif not line.startswith('"') or not field:
            raise ValueError(f"line {number}: cannot read {line[:40]!r}")
        if not (line.startswith('"') and line.endswith('"') and len(line) >= 2):
            raise ValueError(f"line {number}: expected a quoted string")
        value = ast.literal_eval(line)
        if not isinstance(value, str):  # pragma: no cover - a quoted literal is a str
            raise ValueError(f"line {number}: expected a string")
        current[field] = current.get(field, "") + value
    finish()
    return messages


@cache
def catalogue(language: str) -> Catalogue:
    """The compiled catalogue of ``language`` (a key of :data:`LANGUAGES`), cached."""
    if language not in LANGUAGES:
        raise ConfigError(f"no message catalogue for language {language!r}")
    path = LOCALES / f"{language}.po"
    return Catalogue(language, parse_po(path.read_text(encoding="utf-8")))
