"""The egress's identity files: created once, never silently replaced (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.egress.identity import CERT_FILE, KEY_FILE, load_or_create_identity
from ferry.errors import ConfigError


def test_the_identity_is_created_once_then_loaded(tmp_path: Path) -> None:
    created, was_created = load_or_create_identity(tmp_path)
    loaded, created_again = load_or_create_identity(tmp_path)
    assert was_created and not created_again
    assert loaded.fingerprint == created.fingerprint


def test_a_key_without_its_certificate_is_refused_not_replaced(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    key = (tmp_path / KEY_FILE).read_bytes()
    (tmp_path / CERT_FILE).unlink()
    with pytest.raises(ConfigError) as refused:
        load_or_create_identity(tmp_path)
    message = str(refused.value)
    assert f"has {KEY_FILE} but not {CERT_FILE}" in message
    assert "backup" in message and "move" in message
    assert (tmp_path / KEY_FILE).read_bytes() == key
    assert not (tmp_path / CERT_FILE).exists()


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    certificate = (tmp_path / CERT_FILE).read_bytes()
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(ConfigError, match=f"has {CERT_FILE} but not {KEY_FILE}"):
        load_or_create_identity(tmp_path)
    assert (tmp_path / CERT_FILE).read_bytes() == certificate
    assert not (tmp_path / KEY_FILE).exists()
