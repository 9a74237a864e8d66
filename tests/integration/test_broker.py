"""A real broker on 127.0.0.1:0 with real aiohttp clients (docs/protocol.md §2)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ferry.broker.server import Broker, BrokerConfig
from ferry.client.rendezvous import HttpRendezvous
from ferry.core.broker_messages import MAX_BODY_BYTES
from ferry.errors import BrokerError, ConfigError, NoVolunteerError
from ferry.volunteer.broker_client import BrokerClient, new_volunteer_id

pytestmark = pytest.mark.integration

OFFER = "v=0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
ANSWER = "v=0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=x\r\n"
EGRESS = "ws://127.0.0.1:8443/v1/relay"
OTHER_EGRESS = "ws://127.0.0.1:9443/v1/relay"
MATCH_ID = "match-0123456789abcdef"


def _config(**changes: object) -> BrokerConfig:
    settings: dict[str, object] = {"port": 0, "allowed_egresses": (EGRESS,)}
    settings.update(changes)
    return BrokerConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker(_config(), CollectorRegistry()) as running:
        yield running


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes = b"",
    content_type: str = "application/json",
) -> tuple[int, dict[str, object]]:
    async with session.request(
        method, url, data=body, headers={"Content-Type": content_type}
    ) as response:
        assert response.content_type == "application/json"
        decoded = json.loads(await response.read())
        assert isinstance(decoded, dict)
        return response.status, decoded


def _json(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def _offer_body(**changes: object) -> bytes:
    fields: dict[str, object] = {"version": 1, "offer": OFFER, "egress": EGRESS}
    fields.update(changes)
    return json.dumps(fields).encode()


async def _metric(session: aiohttp.ClientSession, base_url: str, sample: str) -> float:
    """The value of one sample line of /metrics (0 when the sample is absent)."""
    async with session.get(base_url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _wait_for_metric(
    session: aiohttp.ClientSession, base_url: str, sample: str, value: float
) -> None:
    for _ in range(200):
        if await _metric(session, base_url, sample) == value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{sample} never became {value}")


async def _volunteer_answers_once(client: BrokerClient, volunteer_id: str) -> str:
    for _ in range(5):
        match = await client.poll(volunteer_id, 3)
        if match is not None:
            assert match.egress == EGRESS
            assert await client.answer(match.id, ANSWER)
            return match.offer
    raise AssertionError("the volunteer never got a match")


# --- the good path ---------------------------------------------------------------------------


async def test_offer_poll_answer_reaches_the_client(
    broker: Broker, session: aiohttp.ClientSession
) -> None:
    url = broker.base_url
    rendezvous = HttpRendezvous(url, session)
    volunteer = BrokerClient(url, session)
    async with asyncio.TaskGroup() as tasks:
        exchange = tasks.create_task(rendezvous.exchange(OFFER, EGRESS))
        relayed = tasks.create_task(_volunteer_answers_once(volunteer, new_volunteer_id()))
    assert exchange.result() == ANSWER
    assert relayed.result() == OFFER
    assert await _metric(session, url, "ferry_broker_matches_total") == 1.0
    assert await _metric(session, url, 'ferry_broker_clients_total{outcome="answered"}') == 1.0
    assert await _metric(session, url, "ferry_broker_waiting_clients") == 0.0


async def test_volunteer_waiting_first_is_matched_when_the_client_comes(
    broker: Broker, session: aiohttp.ClientSession
) -> None:
    url = broker.base_url
    volunteer = BrokerClient(url, session)
    async with asyncio.TaskGroup() as tasks:
        poll = tasks.create_task(volunteer.poll(new_volunteer_id(), 1))
        await _wait_for_metric(session, url, "ferry_broker_waiting_volunteers", 8.0)  # rounded up
        exchange = tasks.create_task(HttpRendezvous(url, session).exchange(OFFER, EGRESS))
        match = await poll
        assert match is not None
        assert await volunteer.answer(match.id, ANSWER)
    assert exchange.result() == ANSWER


async def test_rendezvous_owning_its_session_works_and_closes(
    broker: Broker, session: aiohttp.ClientSession
) -> None:
    rendezvous = HttpRendezvous(broker.base_url)
    try:
        async with asyncio.TaskGroup() as tasks:
            exchange = tasks.create_task(rendezvous.exchange(OFFER, EGRESS))
            volunteer = BrokerClient(broker.base_url, session)
            tasks.create_task(_volunteer_answers_once(volunteer, new_volunteer_id()))
    finally:
        await rendezvous.close()
    assert exchange.result() == ANSWER


async def test_egress_list_and_health(broker: Broker, session: aiohttp.ClientSession) -> None:
    assert await BrokerClient(broker.base_url, session).egresses() == (EGRESS,)
    async with session.get(broker.base_url + "/healthz") as response:
        assert response.status == 200


# --- bounded waits -----------------------------------------------------------------------------


async def test_no_volunteer_gives_no_volunteer_error(session: aiohttp.ClientSession) -> None:
    async with Broker(_config(client_timeout=0.2), CollectorRegistry()) as running:
        with pytest.raises(NoVolunteerError, match="no volunteer"):
            await HttpRendezvous(running.base_url, session).exchange(OFFER, EGRESS)
        outcome = 'ferry_broker_clients_total{outcome="no_volunteer"}'
        assert await _metric(session, running.base_url, outcome) == 1.0
        assert await _metric(session, running.base_url, "ferry_broker_waiting_clients") == 0.0


async def test_poll_without_client_returns_no_match(session: aiohttp.ClientSession) -> None:
    async with Broker(_config(poll_timeout=0.1), CollectorRegistry()) as running:
        assert await BrokerClient(running.base_url, session).poll(new_volunteer_id(), 2) is None


async def test_late_answer_after_answer_timeout_gets_404_and_false(
    session: aiohttp.ClientSession,
) -> None:
    config = _config(client_timeout=0.3, answer_timeout=0.3)
    async with Broker(config, CollectorRegistry()) as running:
        volunteer = BrokerClient(running.base_url, session)

        async def exchange_without_answer() -> None:
            with pytest.raises(NoVolunteerError):
                await HttpRendezvous(running.base_url, session).exchange(OFFER, EGRESS)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(exchange_without_answer())
            match = None
            for _ in range(5):
                match = await volunteer.poll(new_volunteer_id(), 1)
                if match is not None:
                    break
            assert match is not None
        assert not await volunteer.answer(match.id, ANSWER)


async def test_client_that_gives_up_is_forgotten(session: aiohttp.ClientSession) -> None:
    async with Broker(_config(poll_timeout=0.2), CollectorRegistry()) as running:
        url = running.base_url
        async with aiohttp.ClientSession() as impatient_session:
            exchange = asyncio.create_task(
                HttpRendezvous(url, impatient_session).exchange(OFFER, EGRESS)
            )
            await _wait_for_metric(session, url, "ferry_broker_waiting_clients", 8.0)  # rounded up
            exchange.cancel()
            with pytest.raises(asyncio.CancelledError):
                await exchange
        await _wait_for_metric(session, url, "ferry_broker_waiting_clients", 0.0)
        assert await BrokerClient(url, session).poll(new_volunteer_id(), 1) is None
        assert await _metric(session, url, 'ferry_broker_clients_total{outcome="gave_up"}') == 1


async def test_volunteer_that_went_away_is_not_matched(session: aiohttp.ClientSession) -> None:
    async with Broker(_config(), CollectorRegistry()) as running:
        url = running.base_url
        async with aiohttp.ClientSession() as vanishing_session:
            poll = asyncio.create_task(
                BrokerClient(url, vanishing_session).poll(new_volunteer_id(), 9)
            )
            await _wait_for_metric(
                session, url, "ferry_broker_waiting_volunteers", 8.0
            )  # rounded up
            poll.cancel()
            with pytest.raises(asyncio.CancelledError):
                await poll
        await _wait_for_metric(session, url, "ferry_broker_waiting_volunteers", 0.0)
        async with asyncio.TaskGroup() as tasks:
            exchange = tasks.create_task(HttpRendezvous(url, session).exchange(OFFER, EGRESS))
            volunteer = BrokerClient(url, session)
            tasks.create_task(_volunteer_answers_once(volunteer, new_volunteer_id()))
        assert exchange.result() == ANSWER


async def test_close_answers_held_requests(session: aiohttp.ClientSession) -> None:
    running = Broker(_config(), CollectorRegistry())
    url = await running.start()
    try:
        poll = asyncio.create_task(BrokerClient(url, session).poll(new_volunteer_id(), 1))
        await _wait_for_metric(session, url, "ferry_broker_waiting_volunteers", 8.0)  # rounded up
    finally:
        await running.close()
    assert await poll is None


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "field", "reason"),
    [
        (b"{not json", 400, None, "not_json"),
        (b"[1, 2]", 400, None, "not_object"),
        (_offer_body(ofer="typo"), 400, "ofer", "unknown_field"),
        (_offer_body(version=2), 400, "version", "bad_version"),
        (_offer_body(offer="hello"), 400, "offer", "bad_sdp"),
        (_offer_body(egress="http://127.0.0.1/"), 400, "egress", "bad_egress"),
        (_offer_body(egress=OTHER_EGRESS), 400, "egress", "egress_not_allowed"),
        (_offer_body(offer=OFFER + " " * MAX_BODY_BYTES), 413, None, "too_large"),
    ],
    ids=[
        "bad-json",
        "not-object",
        "unknown-field",
        "wrong-version",
        "non-sdp-offer",
        "bad-egress-url",
        "disallowed-egress",
        "oversized",
    ],
)
async def test_bad_client_offer_is_refused_and_counted(
    broker: Broker,
    session: aiohttp.ClientSession,
    body: bytes,
    status: int,
    field: str | None,
    reason: str,
) -> None:
    url = broker.base_url
    got_status, got_body = await _request(session, "POST", url + "/v1/client/offer", body)
    assert (got_status, got_body["field"]) == (status, field)
    assert set(got_body) == {"error", "field"}
    assert isinstance(got_body["error"], str) and got_body["error"]
    sample = f'ferry_broker_rejected_total{{endpoint="client_offer",reason="{reason}"}}'
    assert await _metric(session, url, sample) == 1.0


async def test_oversized_chunked_body_is_refused(
    broker: Broker, session: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * 20000

    async with session.post(
        broker.base_url + "/v1/volunteer/poll",
        data=chunks(),
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 413
        assert (await response.json())["field"] is None


async def test_wrong_content_type_is_415(broker: Broker, session: aiohttp.ClientSession) -> None:
    status, body = await _request(
        session, "POST", broker.base_url + "/v1/client/offer", _offer_body(), "text/plain"
    )
    assert (status, body["field"]) == (415, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_json(version=1, volunteer_id="short", capacity=1), "volunteer_id"),
        (_json(version=1, volunteer_id="v" * 16, capacity=0), "capacity"),
        (_json(version=1, volunteer_id="v" * 16, capacity=True), "capacity"),
        (_json(version=1, volunteer_id="v" * 16), "capacity"),
    ],
)
async def test_bad_poll_is_400_naming_the_field(
    broker: Broker, session: aiohttp.ClientSession, body: bytes, field: str
) -> None:
    status, decoded = await _request(session, "POST", broker.base_url + "/v1/volunteer/poll", body)
    assert (status, decoded["field"]) == (400, field)


async def test_answer_to_unknown_match_is_404(
    broker: Broker, session: aiohttp.ClientSession
) -> None:
    body = _json(version=1, match_id=MATCH_ID, answer=ANSWER)
    status, decoded = await _request(
        session, "POST", broker.base_url + "/v1/volunteer/answer", body
    )
    assert (status, decoded["field"]) == (404, "match_id")
    assert not await BrokerClient(broker.base_url, session).answer(MATCH_ID, ANSWER)
    sample = 'ferry_broker_rejected_total{endpoint="volunteer_answer",reason="unknown_match"}'
    assert await _metric(session, broker.base_url, sample) == 2.0


async def test_answer_that_is_not_sdp_is_400(
    broker: Broker, session: aiohttp.ClientSession
) -> None:
    body = _json(version=1, match_id=MATCH_ID, answer="hello")
    status, decoded = await _request(
        session, "POST", broker.base_url + "/v1/volunteer/answer", body
    )
    assert (status, decoded["field"]) == (400, "answer")


async def test_wrong_method_is_405_json(broker: Broker, session: aiohttp.ClientSession) -> None:
    status, body = await _request(session, "GET", broker.base_url + "/v1/client/offer")
    assert (status, body["field"]) == (405, None)
    sample = 'ferry_broker_rejected_total{endpoint="client_offer",reason="method_not_allowed"}'
    assert await _metric(session, broker.base_url, sample) == 1.0


async def test_unknown_path_is_404_json_with_bounded_label(
    broker: Broker, session: aiohttp.ClientSession
) -> None:
    status, body = await _request(session, "POST", broker.base_url + "/v1/nothing-here")
    assert (status, body["field"]) == (404, None)
    sample = 'ferry_broker_rejected_total{endpoint="unknown",reason="not_found"}'
    assert await _metric(session, broker.base_url, sample) == 1.0


async def test_bad_input_does_not_disturb_a_concurrent_match(
    broker: Broker, session: aiohttp.ClientSession
) -> None:
    url = broker.base_url
    bad_bodies = [b"{", _offer_body(version=3), _offer_body(offer="x"), b"\xff\xfe"] * 5

    async def send_garbage() -> list[int]:
        statuses = []
        for body in bad_bodies:
            status, _ = await _request(session, "POST", url + "/v1/client/offer", body)
            statuses.append(status)
        return statuses

    async with asyncio.TaskGroup() as tasks:
        exchange = tasks.create_task(HttpRendezvous(url, session).exchange(OFFER, EGRESS))
        garbage = tasks.create_task(send_garbage())
        volunteer = BrokerClient(url, session)
        tasks.create_task(_volunteer_answers_once(volunteer, new_volunteer_id()))
    assert exchange.result() == ANSWER
    assert garbage.result() == [400] * len(bad_bodies)
    sample = 'ferry_broker_rejected_total{endpoint="client_offer",reason="not_json"}'
    assert await _metric(session, url, sample) == 5.0


# --- client-side error translation ---------------------------------------------------------


async def test_rendezvous_reports_the_brokers_refusal(
    broker: Broker, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(BrokerError, match="not one of this broker's egresses") as caught:
        await HttpRendezvous(broker.base_url, session).exchange(OFFER, OTHER_EGRESS)
    assert not isinstance(caught.value, NoVolunteerError)


def _closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_unreachable_broker_is_a_broker_error(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{_closed_loopback_port()}"
    with pytest.raises(BrokerError, match="could not reach the broker"):
        await HttpRendezvous(url, session).exchange(OFFER, EGRESS)
    with pytest.raises(BrokerError, match="could not reach the broker"):
        await BrokerClient(url, session).poll(new_volunteer_id(), 1)


def test_config_refuses_a_bad_egress_url() -> None:
    with pytest.raises(ConfigError, match="allowed egress"):
        BrokerConfig(allowed_egresses=("http://127.0.0.1/",))
