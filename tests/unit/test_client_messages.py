"""The client's message catalogues (ferry.client.messages): complete, consistent, chosen well."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from ferry.client.local_page import problem_state
from ferry.client.messages import (
    LANGUAGES,
    LOCALES,
    RIGHT_TO_LEFT,
    catalogue,
    choose_language,
    parse_po,
)
from ferry.client.self_check import CheckStep, StepOutcome
from ferry.errors import BrokerError, ConfigError, EgressIdentityError, NoVolunteerError

SOURCES = [
    Path(__file__).parents[2] / "src" / "ferry" / path
    for path in (
        "client/self_check.py",
        "client/status.py",
        "client/local_page.py",
        "client/role.py",
        "client/command.py",
        "web/client-page.js",
    )
]
MESSAGE_ID = re.compile(
    r"""["']((?:page|state|bridge|setup|check|cli|status)\.[a-z_.]+[a-z_])["']"""
)


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def ids_the_code_uses() -> set[str]:
    used = {"bad_request"}
    for path in SOURCES:
        used |= set(MESSAGE_ID.findall(path.read_text(encoding="utf-8")))
    for step in CheckStep:  # built with f-strings: check.<step>.name / .failed / .advice
        used |= {f"check.{step.value}.name", f"check.{step.value}.failed"}
        used.add(f"check.{step.value}.advice")
    used |= {f"check.label.{outcome.value}" for outcome in StepOutcome}
    for problem in (None, BrokerError("x"), NoVolunteerError("x"), EgressIdentityError("x")):
        used.add(f"state.{problem_state(problem)}")
    used |= {"state.connected", "state.egress"}
    return used


def test_every_language_has_a_catalogue_file_and_nothing_else() -> None:
    assert {path.stem for path in LOCALES.glob("*.po")} == set(LANGUAGES)


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_every_message_is_translated_with_the_same_placeholders(language: str) -> None:
    english = catalogue("en").messages
    translated = catalogue(language).messages
    assert set(translated) == set(english)
    for message_id, text in translated.items():
        assert text.strip(), f"{language}: {message_id} is empty"
        assert placeholders(text) == placeholders(english[message_id]), (language, message_id)


def test_every_message_the_code_uses_exists() -> None:
    used = ids_the_code_uses()
    missing = used - set(catalogue("en").messages)
    assert not missing
    assert len(used) > 60  # the scan found the code's messages


def test_translations_are_not_english_copies() -> None:
    english = catalogue("en").messages
    for language in ("zh_CN", "zh_TW", "fa", "ru"):
        same = [k for k, v in catalogue(language).messages.items() if v == english[k]]
        # Only messages made of placeholders and punctuation may be identical.
        assert all(
            not re.search(r"[A-Za-z]{3}", re.sub(r"\{\w+\}", "", english[k])) for k in same
        ), (
            language,
            same,
        )


def test_text_fills_placeholders() -> None:
    assert catalogue("en").text("cli.page", url="http://x/") == "Status page: http://x/"
    assert catalogue("zh_TW").text("check.summary.failed", number=2, step="S") == (
        "檢查在第 2 步失敗：S。"
    )


def test_persian_is_right_to_left_and_the_others_are_not() -> None:
    assert {"fa"} == RIGHT_TO_LEFT
    assert catalogue("fa").right_to_left
    assert not any(catalogue(language).right_to_left for language in ("en", "zh_CN", "ru"))


@pytest.mark.parametrize(
    ("requested", "environment", "expected"),
    [
        ("fa", {"LANG": "ru_RU.UTF-8"}, "fa"),
        ("zh-TW", {}, "zh_TW"),
        ("zh_HK", {}, "zh_TW"),
        ("zh", {}, "zh_CN"),
        ("RU", {}, "ru"),
        (None, {"LANG": "ru_RU.UTF-8"}, "ru"),
        (None, {"LC_ALL": "fa_IR.UTF-8", "LANG": "ru_RU.UTF-8"}, "fa"),
        (None, {"LC_MESSAGES": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, "zh_CN"),
        (None, {"LANG": "zh_TW.Big5"}, "zh_TW"),
        (None, {"LANG": "de_DE.UTF-8"}, "en"),
        (None, {"LANG": "C.UTF-8"}, "en"),
        (None, {}, "en"),
    ],
)
def test_language_choice(requested: str | None, environment: dict[str, str], expected: str) -> None:
    assert choose_language(requested, environment) == expected


def test_an_unknown_requested_language_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not a language ferry speaks; choose one of en, zh_CN"):
        choose_language("tlh", {})


def test_parse_po_reads_continuations_and_escapes() -> None:
    text = '# c\nmsgid ""\nmsgstr "header"\n\nmsgid "a"\nmsgstr "one "\n"two \\"q\\"\\n"\n'
    assert parse_po(text) == {"a": 'one two "q"\n'}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('msgid "a"\n', "has no msgstr"),
        ('msgid "a"\nmsgstr x\n', "line 2: expected a quoted string"),
        ('msgctxt "a"\n', "line 1: cannot read"),
    ],
)
def test_parse_po_refuses_what_it_does_not_understand(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_po(text)
