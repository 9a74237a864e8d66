"""Builds the ferry browser extension (``extension/``) for one broker: ``scripts/build-extension``.

The extension's offscreen document and popup are the widget's own modules
(``web/widget/*.js``) with the extension's script appended inside the same IIFE, by the same
:func:`ferry.web.bundle.bundle` the broker uses; nothing of the widget is copied. The service
worker, pages and manifest are copied as they are, plus ``build.js`` naming the broker. The
unpacked extension goes to ``out`` and a zip for the store beside it (``out`` + ``.zip``),
with fixed timestamps so that a build is reproducible (docs/extension.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ferry.errors import ConfigError
from ferry.web.bundle import bundle, minify, module_source

__all__ = ["OFFSCREEN_MODULES", "POPUP_MODULES", "ExtensionBuild", "build_extension"]

SOURCE = Path(__file__).parents[3] / "extension"
"""The extension's own files in the repository."""

OFFSCREEN_MODULES = (
    "settings.js",
    "messages.js",
    "limits.js",
    "egress.js",
    "relay.js",
    "broker.js",
    "api.js",
)
"""The widget modules the offscreen document runs: the whole volunteer, without the element."""

POPUP_MODULES = ("settings.js", "messages.js", "limits.js", "egress.js", "api.js", "locale.js")
"""The widget modules the popup uses: texts, number formats and the settings' checks."""

COPIED = ("manifest.json", "background.js", "offscreen.html", "popup.html", "popup.css")
HEADER = "/* ferry extension: built by scripts/build-extension from src/ferry/web/widget/ */\n"
ZIP_TIME = (2026, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class ExtensionBuild:
    """What :func:`build_extension` wrote and how much of it is the widget's."""

    directory: Path
    """The unpacked extension (load it with ``--load-extension``)."""
    archive: Path
    """The same files as a zip for the store."""
    total_bytes: int
    """The unpacked extension's size."""
    code_bytes: int
    """The bytes of its JavaScript."""
    widget_code_bytes: int
    """The part of ``code_bytes`` that is the widget's modules (as bundled)."""


def _check_broker(broker: str) -> str:
    parts = urlsplit(broker)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        raise ConfigError(f"--broker must be an http:// or https:// URL, not {broker!r}")
    if parts.query or parts.fragment:
        raise ConfigError("--broker takes the broker's base URL, without ?query or #fragment")
    return broker.rstrip("/")


def build_extension(broker: str, out: Path) -> ExtensionBuild:
    """Writes the extension for ``broker`` into ``out`` (replaced) and ``out.zip``."""
    broker = _check_broker(broker)
    if out.exists():
        shutil.rmtree(out)
    (out / "_locales" / "en").mkdir(parents=True)
    for name in COPIED:
        shutil.copyfile(SOURCE / name, out / name)
    shutil.copyfile(SOURCE / "_locales/en/messages.json", out / "_locales/en/messages.json")
    (out / "build.js").write_text(
        f"const FERRY_BUILD = Object.freeze({{ broker: {json.dumps(broker)} }});\n", "utf-8"
    )
    for name, modules in (("offscreen.js", OFFSCREEN_MODULES), ("popup.js", POPUP_MODULES)):
        tail = (SOURCE / name).read_text("utf-8")
        (out / name).write_bytes(bundle(modules, header=HEADER, tail=tail))
    widget = sum(
        len(minify("\n".join(module_source(name) for name in modules)).encode("utf-8"))
        for modules in (OFFSCREEN_MODULES, POPUP_MODULES)
    )
    archive = out.with_name(out.name + ".zip")
    files = sorted(path for path in out.rglob("*") if path.is_file())
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(out).as_posix(), ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zipped.writestr(info, path.read_bytes())
    return ExtensionBuild(
        directory=out,
        archive=archive,
        total_bytes=sum(path.stat().st_size for path in files),
        code_bytes=sum(path.stat().st_size for path in files if path.suffix == ".js"),
        widget_code_bytes=widget,
    )


def main(argv: list[str] | None = None) -> int:
    """``scripts/build-extension --broker URL --out DIR``."""
    parser = argparse.ArgumentParser(prog="build-extension", description=__doc__)
    parser.add_argument("--broker", required=True, help="the broker's base URL (the default)")
    parser.add_argument("--out", required=True, type=Path, help="directory for the extension")
    args = parser.parse_args(argv)
    try:
        built = build_extension(args.broker, args.out)
    except ConfigError as exc:
        print(f"build-extension: {exc}", file=sys.stderr)
        return 2
    share = built.widget_code_bytes / built.code_bytes
    print(
        f"{built.directory} ({built.total_bytes} bytes; zip {built.archive.stat().st_size} bytes)"
        f"; JavaScript {built.code_bytes} bytes, {share:.0%} of it the widget's own modules"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
