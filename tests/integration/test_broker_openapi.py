"""The broker's OpenAPI document: it agrees with docs/protocol.md and with the message
definitions, and schemathesis (from PyPI) run against a live broker gets no 5xx."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.openapi import openapi_document
from ferry.broker.server import Broker, BrokerConfig
from ferry.core.broker_messages import (
    NAT_TYPES,
    ClientAnswer,
    ClientOffer,
    IceServersRequest,
    IceServersResponse,
    MatchOffer,
    PollResponse,
    VolunteerAnswer,
    VolunteerPoll,
)
from ferry.core.ice_servers import IceServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EGRESS = "ws://127.0.0.1:8443/v1/relay"
SCHEMATHESIS = [
    sys.executable,
    "-c",
    "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; "
    "sys.exit(schemathesis())",
]
"""schemathesis's command line run by this interpreter (wherever pip put its script)."""


def _schemas() -> dict[str, dict[str, object]]:
    components = openapi_document()["components"]
    assert isinstance(components, dict)
    schemas = components["schemas"]
    assert isinstance(schemas, dict)
    return {name: schema for name, schema in schemas.items() if isinstance(schema, dict)}


def test_every_path_is_in_the_protocol_document_and_back() -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text("utf-8")
    broker_section = protocol.split("\n## 2.", 1)[1].split("\n## 3.", 1)[0]
    documented = set(re.findall(r"`(?:GET|POST) (/[A-Za-z0-9/._-]*)`", broker_section))
    paths = openapi_document()["paths"]
    assert isinstance(paths, dict)
    assert set(paths) <= documented, set(paths) - documented
    api_paths = {path for path in documented if path.startswith("/v1/")}
    assert api_paths <= set(paths), api_paths - set(paths)


@pytest.mark.parametrize(
    ("schema", "message", "request_message"),
    [
        ("ClientOffer", ClientOffer, True),
        ("ClientAnswer", ClientAnswer, False),
        ("VolunteerPoll", VolunteerPoll, True),
        ("MatchOffer", MatchOffer, False),
        ("VolunteerAnswer", VolunteerAnswer, True),
        ("PollResponse", PollResponse, False),
        ("IceServersRequest", IceServersRequest, True),
        ("IceServersResponse", IceServersResponse, False),
        ("IceServer", IceServer, False),
    ],
)
def test_schemas_have_the_fields_of_the_messages(
    schema: str, message: type, request_message: bool
) -> None:
    properties = _schemas()[schema]["properties"]
    assert isinstance(properties, dict)
    fields = {field.name for field in dataclasses.fields(message)}
    assert set(properties) == fields | ({"version"} if request_message else set())


def test_nat_enumeration_is_the_protocol_one() -> None:
    properties = _schemas()["ClientOffer"]["properties"]
    assert isinstance(properties, dict)
    nat = properties["nat"]
    assert isinstance(nat, dict) and tuple(nat["enum"]) == NAT_TYPES


async def test_schemathesis_finds_no_server_error_against_a_live_broker(tmp_path: Path) -> None:
    config = BrokerConfig(
        host="127.0.0.1",
        port=0,
        allowed_egresses=(EGRESS,),
        client_timeout=0.2,
        poll_timeout=0.2,
        answer_timeout=0.2,
        offer_rate=1000.0,
        offer_burst=1000,
        poll_rate=1000.0,
        poll_burst=1000,
        ice_rate=1000.0,
        ice_burst=1000,
        ice_servers=(
            IceServer("stun:198.51.100.1"),
            IceServer("turn:198.51.100.2:3478?transport=udp"),
        ),
        turn_secret=b"schemathesis-secret",
    )
    async with Broker(config, CollectorRegistry()) as broker:
        async with (
            aiohttp.ClientSession() as session,
            session.get(broker.base_url + "/openapi.json") as response,
        ):
            assert response.status == 200
            assert (await response.json())["openapi"].startswith("3.1")
        process = await asyncio.create_subprocess_exec(
            *SCHEMATHESIS,
            "run",
            broker.base_url + "/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--seed",
            "1",
            "--warnings",
            "off",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        try:
            async with asyncio.timeout(240):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    text = output.decode("utf-8", "replace")
    assert process.returncode == 0, text[-4000:]
    assert "No issues found" in text, text[-4000:]
    generated = re.search(r"(\d+) generated", text)
    assert generated is not None and int(generated.group(1)) > 50, text[-2000:]
