"""The browser widget as one script, built from its modules in ``web/widget/`` at start-up.

The widget is written as plain scripts, one concern each (docs/widget.md, "Modules"). They
share one scope: :func:`bundle` concatenates them, in the order given, inside one IIFE, so a
module sees every name the others declare and nothing leaks into the page. There is no npm
build step; the broker calls :func:`widget_js` when it starts (once per process).

To stay small (the widget's budget is 60 KiB), the concatenation drops what a browser never
needs: comments that fill their lines, leading indentation and blank lines. It never touches
a string, template or regular-expression literal, nor a comment that shares a line with code,
and it keeps every line break, so automatic semicolon insertion reads the same code.
``python3 -m ferry.web.bundle`` prints the widget; ``src/ferry/web/widget.js`` is that output,
kept for pages that host the file themselves, and a test fails when it is stale.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterator, Sequence
from importlib import resources

__all__ = ["WIDGET_MODULES", "bundle", "minify", "module_source", "widget_js"]

WIDGET_MODULES = (
    "settings.js",
    "messages.js",
    "limits.js",
    "egress.js",
    "relay.js",
    "broker.js",
    "api.js",
    "locale.js",
    "ui.js",
    "main.js",
)
"""The widget's modules in concatenation order: a module may use at its top level only what an
earlier one declared (a ``const`` is not readable before its line runs); functions and
methods may use any."""

HEADER = (
    "/* ferry volunteer widget: <script src=BROKER/widget.js async></script> + <ferry-widget>.\n"
    " * Built by ferry.web.bundle from src/ferry/web/widget/*.js; edit those, not this. */\n"
)

_REGEX_AFTER = set("(,=:[!&|?{};+-*%<>~^") | {""}
_REGEX_KEYWORDS = {"return", "typeof", "case", "of", "in", "void", "delete", "throw", "new"}
_WORD_BEFORE = re.compile(r"([A-Za-z_$][\w$]*)\s*$")


def _skip_quoted(source: str, at: int, quote: str) -> int:
    """The index after the string literal that starts at ``at``."""
    at += 1
    while source[at] != quote:
        at += 2 if source[at] == "\\" else 1
    return at + 1


def _skip_regex(source: str, at: int) -> int:
    """The index after the regular-expression literal (and its flags) at ``at``."""
    at += 1
    in_class = False
    while in_class or source[at] != "/":
        if source[at] == "\\":
            at += 1
        elif source[at] == "[":
            in_class = True
        elif source[at] == "]":
            in_class = False
        elif source[at] == "\n":
            raise ValueError(f"unterminated regular expression at {at}")
        at += 1
    at += 1
    while at < len(source) and source[at].isalpha():
        at += 1
    return at


def _skip_template(source: str, at: int) -> int:
    """The index after the template literal at ``at``, whose ``${...}`` may nest anything."""
    at += 1
    while source[at] != "`":
        if source[at] == "\\":
            at += 2
        elif source.startswith("${", at):
            at = _skip_code(source, at + 2, until="}")
        else:
            at += 1
    return at + 1


def _starts_regex(source: str, at: int) -> bool:
    code = source[:at].rstrip()
    word = _WORD_BEFORE.search(code)
    if word is not None:
        return word.group(1) in _REGEX_KEYWORDS
    return code[-1:] in _REGEX_AFTER


def _skip_code(source: str, at: int, until: str) -> int:
    """The index after the ``}`` that closes a template's ``${`` (nesting counted)."""
    depth = 0
    while True:
        char = source[at]
        if char in "\"'":
            at = _skip_quoted(source, at, char)
        elif char == "`":
            at = _skip_template(source, at)
        elif char == "/" and source[at + 1] not in "/*" and _starts_regex(source, at):
            at = _skip_regex(source, at)
        elif char == "{":
            depth, at = depth + 1, at + 1
        elif char == until and depth == 0:
            return at + 1
        else:
            depth -= char == "}"
            at += 1


def _tokens(source: str) -> Iterator[tuple[str, str]]:
    """``(kind, text)`` pieces of ``source`` that add up to it: ``code``, ``comment`` or
    ``literal`` (a string, template or regular expression, kept byte for byte)."""
    at = code_start = 0
    while at < len(source):
        char = source[at]
        end = at
        kind = "literal"
        if source.startswith("//", at):
            line_end = source.find("\n", at)
            end, kind = (len(source) if line_end == -1 else line_end), "comment"
        elif source.startswith("/*", at):
            end, kind = source.index("*/", at + 2) + 2, "comment"
        elif char in "\"'":
            end = _skip_quoted(source, at, char)
        elif char == "`":
            end = _skip_template(source, at)
        elif char == "/" and _starts_regex(source, at):
            end = _skip_regex(source, at)
        if end == at:
            at += 1
            continue
        if code_start < at:
            yield "code", source[code_start:at]
        yield kind, source[at:end]
        at = code_start = end
    if code_start < len(source):
        yield "code", source[code_start:]


def minify(source: str) -> str:
    """``source`` without full-line comments, leading indentation and blank lines."""
    pieces = list(_tokens(source))
    out: list[str] = []
    at_line_start = True  # nothing but indentation kept since the last line break
    for index, (kind, text) in enumerate(pieces):
        following = pieces[index + 1][1] if index + 1 < len(pieces) else ""
        if kind == "comment" and at_line_start and re.match(r"[ \t]*(\n|$)", following):
            continue  # a comment alone on its line(s)
        if kind == "code":
            text = re.sub(r"[ \t]*\n[ \t\n]*", "\n", text)
            if at_line_start:
                text = text.lstrip(" \t\n")
            if not text:
                continue
            at_line_start = text.endswith("\n")
        else:
            at_line_start = False
        out.append(text)
    return "".join(out)


def module_source(name: str) -> str:
    """The text of the widget module ``name`` (``web/widget/NAME``)."""
    return resources.files("ferry").joinpath("web", "widget", name).read_text("utf-8")


def bundle(modules: Sequence[str], *, header: str = HEADER, tail: str = "") -> bytes:
    """``modules`` (names in ``web/widget/``), then ``tail`` (a script of their user, such as
    the browser extension's), concatenated in order inside one IIFE, minified."""
    body = "\n".join([*(module_source(name) for name in modules), tail])
    script = f'(() => {{\n"use strict";\n{body}\n}})();\n'
    return (header + minify(script)).encode("utf-8")


@functools.cache
def widget_js() -> bytes:
    """The widget the broker serves at ``/widget.js`` (built once per process: ~0.1 s)."""
    return bundle(WIDGET_MODULES)


if __name__ == "__main__":  # pragma: no cover - python3 -m ferry.web.bundle > widget.js
    sys.stdout.buffer.write(widget_js())
