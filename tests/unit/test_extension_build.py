"""The browser extension's build (ferry.web.extension, scripts/build-extension)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from ferry.errors import ConfigError
from ferry.web.bundle import minify, module_source
from ferry.web.extension import OFFSCREEN_MODULES, build_extension, main


def test_the_build_writes_the_extension_and_an_identical_zip(tmp_path: Path) -> None:
    built = build_extension("http://127.0.0.1:8080/", tmp_path / "ext")
    files = {
        path.relative_to(built.directory).as_posix(): path.read_bytes()
        for path in built.directory.rglob("*")
        if path.is_file()
    }
    with zipfile.ZipFile(built.archive) as zipped:
        assert {name: zipped.read(name) for name in zipped.namelist()} == files
    manifest = json.loads(files["manifest.json"])
    assert manifest["manifest_version"] == 3
    assert manifest["host_permissions"] == []
    assert sorted(manifest["permissions"]) == ["offscreen", "storage"]
    assert "content_scripts" not in manifest
    assert (
        files["build.js"]
        == b'const FERRY_BUILD = Object.freeze({ broker: "http://127.0.0.1:8080" });\n'
    )
    offscreen = files["offscreen.js"].decode("utf-8")
    # the widget's volunteer, as bundled, is in the offscreen script: not a copy of it
    for name in OFFSCREEN_MODULES:
        assert minify(module_source(name)).strip() in offscreen
    assert "customElements.define" not in offscreen
    assert built.total_bytes == sum(len(data) for data in files.values())
    assert 0.5 < built.widget_code_bytes / built.code_bytes < 1


def test_a_second_build_gives_the_same_zip(tmp_path: Path) -> None:
    first = build_extension("https://broker.example", tmp_path / "a").archive.read_bytes()
    second = build_extension("https://broker.example", tmp_path / "a").archive.read_bytes()
    assert first == second


@pytest.mark.parametrize(
    "broker", ["ftp://broker.example", "broker.example", "https://u@b.example", "https://b/?x=1"]
)
def test_a_bad_broker_is_refused(tmp_path: Path, broker: str) -> None:
    with pytest.raises(ConfigError, match="--broker"):
        build_extension(broker, tmp_path / "ext")
    assert main(["--broker", broker, "--out", str(tmp_path / "ext")]) == 2
    assert not (tmp_path / "ext").exists()
