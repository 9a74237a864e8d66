"""The widget's bundler (ferry.web.bundle): module order, the checked-in widget.js, and a
minifier that never changes a literal."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.web.bundle import WIDGET_MODULES, _tokens, bundle, minify, module_source, widget_js

WEB = Path(__file__).parents[2] / "src" / "ferry" / "web"

TRICKY = """\
/** A doc comment
 * on two lines. */
const a = `
    // not a comment: a template's own line
    /* nor this */
  ${ { x: "}`" }.x }
`;
  // a comment alone
  const b = "// a string" + '/* too */'; // a trailing comment stays
  const c = /[`"'/]\\/\\//g.test(a) ? 1 / 2 / 3 : `${a}`;   /* stays too */

\tconst d = x => (x) / 2; /*
 a comment after code stays whole */
"""

TRICKY_MINIFIED = """\
const a = `
    // not a comment: a template's own line
    /* nor this */
  ${ { x: "}`" }.x }
`;
const b = "// a string" + '/* too */'; // a trailing comment stays
const c = /[`"'/]\\/\\//g.test(a) ? 1 / 2 / 3 : `${a}`;   /* stays too */
const d = x => (x) / 2; /*
 a comment after code stays whole */
"""


def _literals(source: str) -> list[str]:
    return [text for kind, text in _tokens(source) if kind == "literal"]


def test_the_minifier_drops_only_full_line_comments_indentation_and_blank_lines() -> None:
    assert minify(TRICKY) == TRICKY_MINIFIED
    assert _literals(TRICKY) == _literals(TRICKY_MINIFIED)
    assert len(_literals(TRICKY)) == 5


def test_the_minifier_keeps_every_literal_of_the_widget() -> None:
    raw = "\n".join(module_source(name) for name in WIDGET_MODULES)
    literals = _literals(raw)
    assert _literals(minify(raw)) == literals
    multi_line = [text for text in literals if "\n" in text]
    assert multi_line  # the element's style and markup
    served = widget_js().decode("utf-8")
    assert all(text in served for text in multi_line)


def test_every_module_is_bundled_once_in_the_documented_order() -> None:
    on_disk = sorted(path.name for path in (WEB / "widget").glob("*.js"))
    assert sorted(WIDGET_MODULES) == on_disk
    assert len(set(WIDGET_MODULES)) == len(WIDGET_MODULES)
    documented = (Path(__file__).parents[2] / "docs" / "widget.md").read_text("utf-8")
    order = [documented.index(f"`{name}`") for name in WIDGET_MODULES]
    assert order == sorted(order)


def test_the_checked_in_widget_is_the_bundle() -> None:
    """``python3 -m ferry.web.bundle > src/ferry/web/widget.js`` after editing a module."""
    assert (WEB / "widget.js").read_bytes() == widget_js()


def test_a_bundle_is_one_iife_with_its_header() -> None:
    script = bundle(["settings.js"], header="/* h */\n").decode("utf-8")
    assert script.startswith('/* h */\n(() => {\n"use strict";\nconst LIMITS')
    assert script.endswith("\n})();\n")


def test_an_unterminated_regular_expression_is_an_error() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        minify("const a = (/abc\n);\n")
