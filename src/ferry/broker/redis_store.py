"""The broker's state in Redis, shared by any number of broker instances.

Every change is one Lua script, so it is atomic across instances, and timed by Redis's own
clock (``TIME``), so instances need not agree on the time (a test may pass a ``clock``
instead, which every script then takes as its last argument, to run the matchmaking vectors
on a clock it advances). An instance waits for news about
the requests it holds on one list of its own (``<prefix>instance:<id>``), read by one
dispatcher task; scripts push there (a match for a poll, a match or an answer for a client).
The keys, their contents and their expiry are in ``docs/architecture.md`` ("The broker's
store"). Everything of a client's (its offer, egress, match) expires in Redis within
``client_timeout`` plus one second even if every instance dies; a volunteer's availability
within ``poll_timeout`` plus two seconds.

The matching policy is the sans-IO matchmaker's (``ferry.core.matchmaking``), written again
in Lua: a restricted client takes an unrestricted volunteer first, an unrestricted client a
restricted one first; within a class the poll waiting longest (capacity, a volunteer's own
claim, buys nothing);
waiting clients oldest first, a volunteer taking the other class's oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ferry.broker.store import (
    PollOutcome,
    RateLimitedError,
    RateLimitName,
    RateLimits,
    StoreUnavailableError,
    hash_source,
)
from ferry.core.broker_messages import (
    ClientOffer,
    MatchOffer,
    NatType,
    VolunteerAnswer,
    VolunteerKind,
    VolunteerPoll,
)
from ferry.core.matchmaking import AvailableVolunteers, MatchmakerConfig, is_unrestricted
from ferry.errors import BrokerError
from ferry.logs import get_logger
from ferry.tasks import TaskOwner

logger = get_logger(__name__)

NOTICE_GRACE = 2.0
"""Seconds a request waits for news already on its way (a match made just as its wait ran
out, an answer given just as the client gave up) before it ends without it."""

DISPATCH_BLOCK = 1.0
"""Seconds the dispatcher blocks on its list per round (bounds how long closing takes)."""

ALIVE_FOR = 3.0
"""Seconds an instance counts as alive after it last said so (it says so every
``DISPATCH_BLOCK`` at least): polls and clients held by an instance that died are skipped
(and forgotten) from then on."""

DISPATCH_BATCH = 512
"""Most notices the dispatcher takes from its list in one round trip."""

REDIS_CONNECTIONS = 64
"""Most connections one instance opens to Redis; more requests wait for a free one."""


# Every script's last ARGV is ``now`` in milliseconds from the store's ``clock``, or '' for
# Redis's own clock (TIME); the "ARGV:" lists below leave it out.
_LIBRARY = r"""
local P = ARGV[1]
local function now_ms()
  local given = ARGV[#ARGV]  -- the store's clock, in ms; '' for Redis's own (TIME)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function notify(instance, to, message)
  local key = P .. 'instance:' .. instance
  message['to'] = to
  redis.call('RPUSH', key, cjson.encode(message))
  redis.call('PEXPIRE', key, 60000)
end
local function alive(instance)
  return redis.call('EXISTS', P .. 'alive:' .. instance) == 1
end
local function take_token(limit, source, rate, burst, now)
  local key = P .. 'rate:' .. limit .. ':' .. source
  local held = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = burst
  if held[1] then
    tokens = math.min(burst, tonumber(held[1]) + math.max(0, now - tonumber(held[2])) / 1000 * rate)
  end
  local retry = 0
  if tokens >= 1 then tokens = tokens - 1 else retry = (1 - tokens) / rate end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate * 1000) + 1000)
  return retry
end
local function other(class)
  if class == 'u' then return 'r' end
  return 'u'
end
local function pair(token, vid, match_id, now, answer_timeout)
  local ckey = P .. 'client:' .. token
  local c = redis.call('HMGET', ckey, 'offer', 'egress', 'deadline', 'arrived', 'instance')
  local pkey = P .. 'poll:' .. vid
  local p = redis.call('HMGET', pkey, 'token', 'instance', 'pool')
  redis.call('DEL', pkey)
  redis.call('ZREM', P .. 'polls:' .. p[3], vid)
  redis.call('ZREM', P .. 'waiting-polls', vid)
  local answer_deadline = math.min(tonumber(c[3]), now + answer_timeout)
  redis.call('SET', P .. 'match:' .. match_id, token, 'PX', math.max(1, answer_deadline - now))
  redis.call('HSET', ckey, 'match', match_id, 'answer_by', answer_deadline)
  redis.call('ZADD', P .. 'answering', answer_deadline, token)
  redis.call('PEXPIRE', P .. 'answering', answer_timeout + 1000)
  notify(p[2], p[1], {match = {id = match_id, offer = c[1], egress = c[2]},
                      waited = now - tonumber(c[4])})
  notify(c[5], token, {matched = match_id, answer_ms = answer_deadline - now})
end
local function seek(token, now, match_id, answer_timeout)
  local c = redis.call('HMGET', P .. 'client:' .. token, 'pairing', 'class')
  for _, class in ipairs({other(c[2]), c[2]}) do
    local pool = c[1] .. ':' .. class
    local zkey = P .. 'polls:' .. pool
    while true do
      local best = redis.call('ZRANGE', zkey, 0, 0)
      if #best == 0 then break end
      local p = redis.call('HMGET', P .. 'poll:' .. best[1], 'pool', 'instance', 'deadline')
      if p[1] == pool and alive(p[2]) and (tonumber(p[3]) or math.huge) > now then
        pair(token, best[1], match_id, now, answer_timeout)
        return true
      end
      redis.call('ZREM', zkey, best[1])  -- gone, moved, or its wait ran out (its instance ends it)
      if p[1] == pool and not alive(p[2]) then  -- held by an instance that died: forget it
        redis.call('DEL', P .. 'poll:' .. best[1])
        redis.call('ZREM', P .. 'waiting-polls', best[1])
      end
    end
  end
  return false
end
local function enqueue(token, front, client_timeout)
  local c = redis.call('HMGET', P .. 'client:' .. token, 'pairing', 'class')
  local qkey = P .. 'clients:' .. c[1] .. ':' .. c[2]
  if front then redis.call('LPUSH', qkey, token) else redis.call('RPUSH', qkey, token) end
  redis.call('PEXPIRE', qkey, client_timeout)
end
-- Matches whose answer is overdue, voided now rather than when their client's instance
-- notices: the client is served again at once (as the in-memory matchmaker does in expire),
-- with match ids made from one fresh id. The instance's own requeue later finds 'moved'.
local function sweep(now, id_base, answer_timeout, client_timeout)
  local akey = P .. 'answering'
  local overdue = redis.call('ZRANGEBYSCORE', akey, '-inf', now)
  for i, token in ipairs(overdue) do
    redis.call('ZREM', akey, token)
    local ckey = P .. 'client:' .. token
    local c = redis.call('HMGET', ckey, 'match', 'deadline', 'answer_by')
    if c[1] and c[3] and tonumber(c[3]) <= now then
      redis.call('DEL', P .. 'match:' .. c[1])
      redis.call('HDEL', ckey, 'match', 'answer_by')
      if tonumber(c[2]) > now and not seek(token, now, id_base .. '-' .. i, answer_timeout) then
        enqueue(token, true, client_timeout)
      end
    end
  end
end
"""

# ARGV: prefix, token, instance, pairing, class, offer, egress, client_timeout_ms,
#       answer_timeout_ms, match_id, max_waiting_clients, source hash, rate, burst
_OFFER = r"""
local now = now_ms()
local retry = take_token('client_offer', ARGV[12], tonumber(ARGV[13]), tonumber(ARGV[14]), now)
if retry > 0 then return 'limited:' .. tostring(retry) end
local token = ARGV[2]
sweep(now, ARGV[10], tonumber(ARGV[9]), tonumber(ARGV[8]) + 1000)
local wkey = P .. 'waiting-clients'
redis.call('ZREMRANGEBYSCORE', wkey, '-inf', now)
if redis.call('ZCARD', wkey) >= tonumber(ARGV[11]) then return 'full' end
local deadline = now + tonumber(ARGV[8])
local ckey = P .. 'client:' .. token
redis.call('HSET', ckey, 'offer', ARGV[6], 'egress', ARGV[7], 'pairing', ARGV[4],
           'class', ARGV[5], 'arrived', now, 'deadline', deadline, 'instance', ARGV[3])
redis.call('PEXPIRE', ckey, tonumber(ARGV[8]) + 1000)
redis.call('ZADD', wkey, deadline, token)
redis.call('PEXPIRE', wkey, tonumber(ARGV[8]) + 1000)
if seek(token, now, ARGV[10] .. '-0', tonumber(ARGV[9])) then return 'matched' end
enqueue(token, false, tonumber(ARGV[8]) + 1000)
return 'queued'
"""

# ARGV: prefix, token ('' to look it up by the match), old match id, new match id,
#       answer_timeout_ms, client_timeout_ms
_REQUEUE = r"""
local token = ARGV[2]
if token == '' then
  token = redis.call('GET', P .. 'match:' .. ARGV[3])
  if not token then return 'gone' end
end
local ckey = P .. 'client:' .. token
local c = redis.call('HMGET', ckey, 'match', 'deadline')
if not c[2] then return 'gone' end
if c[1] ~= ARGV[3] then return 'moved' end
redis.call('DEL', P .. 'match:' .. ARGV[3])
redis.call('HDEL', ckey, 'match', 'answer_by')
redis.call('ZREM', P .. 'answering', token)
local now = now_ms()
if tonumber(c[2]) <= now then return 'late' end
if seek(token, now, ARGV[4], tonumber(ARGV[5])) then return 'matched' end
enqueue(token, true, tonumber(ARGV[6]) + 1000)
return 'queued'
"""

# ARGV: prefix, match id, answer
_ANSWER = r"""
local mkey = P .. 'match:' .. ARGV[2]
local token = redis.call('GET', mkey)
if not token then return 0 end
redis.call('DEL', mkey)
local ckey = P .. 'client:' .. token
local c = redis.call('HMGET', ckey, 'match', 'instance', 'answer_by')
if c[1] ~= ARGV[2] then return 0 end
if not c[3] or tonumber(c[3]) <= now_ms() then return 0 end  -- too late: its client moved on
redis.call('DEL', ckey)
redis.call('ZREM', P .. 'waiting-clients', token)
redis.call('ZREM', P .. 'answering', token)
notify(c[2], token, {answer = ARGV[3]})
return 1
"""

# ARGV: prefix, token
_CLIENT_END = r"""
local ckey = P .. 'client:' .. ARGV[2]
local c = redis.call('HMGET', ckey, 'pairing', 'class', 'match')
redis.call('ZREM', P .. 'waiting-clients', ARGV[2])
if not c[1] then return 'gone' end
redis.call('LREM', P .. 'clients:' .. c[1] .. ':' .. c[2], 0, ARGV[2])
if c[3] then redis.call('DEL', P .. 'match:' .. c[3]) end
redis.call('DEL', ckey)
redis.call('ZREM', P .. 'answering', ARGV[2])
return 'ended'
"""

# ARGV: prefix, volunteer id, poll token, instance, pairing, class, nat, kind, capacity,
#       poll_timeout_ms, max_waiting_volunteers, match id, answer_timeout_ms, source hash,
#       rate, burst, client_timeout_ms
_POLL = r"""
local now = now_ms()
local retry = take_token('volunteer_poll', ARGV[14], tonumber(ARGV[15]), tonumber(ARGV[16]), now)
if retry > 0 then return 'limited:' .. tostring(retry) end
local vid = ARGV[2]
sweep(now, ARGV[12], tonumber(ARGV[13]), tonumber(ARGV[17]) + 1000)
local pkey = P .. 'poll:' .. vid
local wkey = P .. 'waiting-polls'
local old = redis.call('HMGET', pkey, 'token', 'instance', 'pool')
if old[1] then
  redis.call('ZREM', P .. 'polls:' .. old[3], vid)
  redis.call('DEL', pkey)
  notify(old[2], old[1], {ended = true})
else
  redis.call('ZREMRANGEBYSCORE', wkey, '-inf', now)
  if redis.call('ZCARD', wkey) >= tonumber(ARGV[11]) then return 'full' end
end
local class = ARGV[6]
local pool = ARGV[5] .. ':' .. class
for _, client_class in ipairs({other(class), class}) do
  local qkey = P .. 'clients:' .. ARGV[5] .. ':' .. client_class
  while true do
    local token = redis.call('LPOP', qkey)
    if not token then break end
    local c = redis.call('HMGET', P .. 'client:' .. token, 'deadline', 'match', 'instance')
    if c[1] and not c[2] and tonumber(c[1]) > now and alive(c[3]) then
      redis.call('HSET', pkey, 'token', ARGV[3], 'instance', ARGV[4], 'pool', pool)
      pair(token, vid, ARGV[12] .. '-0', now, tonumber(ARGV[13]))
      return 'matched'
    end
  end
end
local ttl = tonumber(ARGV[10])
redis.call('HSET', pkey, 'token', ARGV[3], 'instance', ARGV[4], 'pool', pool,
           'nat', ARGV[7], 'kind', ARGV[8], 'deadline', now + ttl)
redis.call('PEXPIRE', pkey, ttl + 2000)
local sequence = redis.call('INCR', P .. 'sequence') % 1099511627776
local zkey = P .. 'polls:' .. pool
local score = sequence  -- the one waiting longest first; ARGV[9] (capacity) chooses nothing
redis.call('ZADD', zkey, string.format('%.0f', score), vid)
redis.call('PEXPIRE', zkey, ttl + 2000)
redis.call('ZADD', wkey, now + ttl, vid)
redis.call('PEXPIRE', wkey, ttl + 2000)
return 'waiting'
"""

# ARGV: prefix, volunteer id, poll token
_POLL_END = r"""
local pkey = P .. 'poll:' .. ARGV[2]
local p = redis.call('HMGET', pkey, 'token', 'pool')
if p[1] ~= ARGV[3] then return 'gone' end
redis.call('DEL', pkey)
redis.call('ZREM', P .. 'polls:' .. p[2], ARGV[2])
redis.call('ZREM', P .. 'waiting-polls', ARGV[2])
return 'ended'
"""


@dataclass(frozen=True, slots=True)
class _Notice:
    """News for one held request, decoded from the instance's list."""

    match: MatchOffer | None = None
    """For a poll: the client it is given."""
    waited_ms: int = 0
    """For a poll's match: how long the client waited for it, in milliseconds."""
    ended: bool = False
    """For a poll: a newer poll of the same volunteer replaced it."""
    closing: bool = False
    """For any request: this instance is closing; end the wait now."""
    matched: str | None = None
    """For a client: the id of the match it was given."""
    answer_ms: int = 0
    """For a client's match: milliseconds the volunteer has to answer."""
    answer: str | None = None
    """For a client: the volunteer's answer."""


def _decode_notice(raw: str) -> tuple[str, _Notice] | None:
    try:
        fields = json.loads(raw)
        to = str(fields["to"])
        match = fields.get("match")
        return to, _Notice(
            match=None
            if not isinstance(match, dict)
            else MatchOffer(str(match["id"]), str(match["offer"]), str(match["egress"])),
            waited_ms=int(fields.get("waited", 0)),
            ended=bool(fields.get("ended", False)),
            matched=None if fields.get("matched") is None else str(fields["matched"]),
            answer_ms=int(fields.get("answer_ms", 0)),
            answer=None if fields.get("answer") is None else str(fields["answer"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _class_of(nat: NatType) -> str:
    return "u" if is_unrestricted(nat) else "r"


def _new_id() -> str:
    return secrets.token_urlsafe(24)


class RedisMatchStore:
    """A :class:`~ferry.broker.store.MatchStore` in Redis; see the module docstring."""

    def __init__(
        self,
        url: str,
        config: MatchmakerConfig,
        limits: RateLimits,
        *,
        prefix: str = "ferry:",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.prefix = prefix
        self.instance = _new_id()
        """This instance's id: names its list of notices."""
        self.clock = clock
        """Seconds on the clock the scripts take as ``now``; ``None`` (the default): Redis's
        own clock, so that instances need not agree on the time. Tests pass the event loop's
        clock, whose time they advance, so the scripts and the waits share one time."""
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_CONNECTIONS, timeout=None, decode_responses=True
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._dispatch_redis = redis.Redis.from_url(url, decode_responses=True)
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(_LIBRARY + body)
            for name, body in (
                ("offer", _OFFER),
                ("requeue", _REQUEUE),
                ("answer", _ANSWER),
                ("client_end", _CLIENT_END),
                ("poll", _POLL),
                ("poll_end", _POLL_END),
            )
        }
        self._waiters: dict[str, asyncio.Queue[_Notice]] = {}
        """By token, the queue of news for each request this instance holds."""
        self._held_polls: dict[tuple[NatType, VolunteerKind], int] = {}
        """Polls this instance holds, by NAT type and kind."""
        self._held_clients = 0
        self._salt = b""
        self._tasks = TaskOwner("redis-store")
        self._dispatcher: asyncio.Task[None] | None = None
        self._ending = False

    async def _run(self, script: str, *args: str | int | float) -> str:
        try:
            now = "" if self.clock is None else str(math.floor(self.clock() * 1000))
            result = await self._scripts[script](keys=[], args=[self.prefix, *args, now])
        except RedisError as exc:
            raise StoreUnavailableError(
                f"the broker's shared state (Redis) failed: {type(exc).__name__}"
            ) from exc
        return str(result)

    async def start(self) -> None:
        """Read (or create) the shared salt and start the dispatcher."""
        key = self.prefix + "source-salt"
        try:
            await self._redis.set(key, secrets.token_hex(16), nx=True)
            salt = await self._redis.get(key)
        except RedisError as exc:
            raise StoreUnavailableError(
                f"the broker cannot reach Redis ({type(exc).__name__}); check --redis"
            ) from exc
        self._salt = str(salt).encode("ascii")
        await self._redis.set(self.prefix + "alive:" + self.instance, "1", px=_ms(ALIVE_FOR))
        self._dispatcher = self._tasks.spawn(self._dispatch(), name="dispatch")

    async def _dispatch(self) -> None:
        """Hand each notice on this instance's list to the request it is for."""
        key = self.prefix + "instance:" + self.instance
        alive_key = self.prefix + "alive:" + self.instance
        failures = 0
        while not self._ending:
            try:
                await self._dispatch_redis.set(alive_key, "1", px=_ms(ALIVE_FOR))
                popped = await self._dispatch_redis.blpop([key], timeout=DISPATCH_BLOCK)
                failures = 0
            except RedisError as exc:
                failures += 1
                logger.warning("reading notices from Redis failed (%s)", type(exc).__name__)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            if popped is None:
                continue
            raws = [str(popped[1])]
            try:  # under load many notices wait: take them in one round trip
                more = await self._dispatch_redis.lpop(key, DISPATCH_BATCH)
            except RedisError:
                more = None
            raws.extend(str(raw) for raw in more or ())
            for raw in raws:
                await self._deliver(raw)

    async def _deliver(self, raw: str) -> None:
        decoded = _decode_notice(raw)
        if decoded is None:
            logger.warning("dropped a malformed notice from Redis")
            return
        to, notice = decoded
        queue = self._waiters.get(to)
        if queue is not None:
            queue.put_nowait(notice)
        elif notice.match is not None:  # the poll went away: give the client another
            with contextlib.suppress(BrokerError):
                await self._requeue("", notice.match.id)

    async def _requeue(self, token: str, match_id: str) -> str:
        return await self._run(
            "requeue",
            token,
            match_id,
            _new_id(),
            _ms(self.config.answer_timeout),
            _ms(self.config.client_timeout),
        )

    async def _next_notice(self, queue: asyncio.Queue[_Notice], timeout: float) -> _Notice | None:
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                return await queue.get()
        except TimeoutError:
            return None

    async def _late_answer(self, queue: asyncio.Queue[_Notice]) -> str | None:
        """The answer on its way to a client whose match was answered just as its wait ended
        (within ``NOTICE_GRACE``); other news still queued for it (a newer match) is passed
        over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NOTICE_GRACE
        while (notice := await self._next_notice(queue, deadline - loop.time())) is not None:
            if notice.answer is not None or notice.closing:
                return notice.answer
        return None

    async def wait_for_volunteer(
        self, offer: ClientOffer, source: str, *, on_held: Callable[[], None]
    ) -> str | None:
        """See :meth:`ferry.broker.store.MatchStore.wait_for_volunteer`."""
        if self._ending:
            return None
        loop = asyncio.get_running_loop()
        token = _new_id()
        queue: asyncio.Queue[_Notice] = asyncio.Queue()
        self._waiters[token] = queue
        self._held_clients += 1
        ended = False
        try:
            result = await self._run(
                "offer",
                token,
                self.instance,
                offer.pairing or "-",
                _class_of(offer.nat),
                offer.offer,
                offer.egress,
                _ms(self.config.client_timeout),
                _ms(self.config.answer_timeout),
                _new_id(),
                self.config.max_waiting_clients,
                *self._source_arguments("client_offer", source),
            )
            if result.startswith("limited:"):
                ended = True
                raise RateLimitedError(float(result.removeprefix("limited:")))
            if result == "full":
                ended = True
                raise BrokerError("too many clients are waiting for a volunteer; try again later")
            on_held()
            deadline = loop.time() + self.config.client_timeout
            match_id: str | None = None
            answer_deadline = math.inf
            while True:
                notice = await self._next_notice(
                    queue, min(deadline, answer_deadline) - loop.time()
                )
                if notice is None:
                    if match_id is not None and loop.time() < deadline:
                        outcome = await self._requeue(token, match_id)
                        match_id, answer_deadline = None, math.inf
                        if outcome in ("matched", "queued", "moved"):
                            continue
                        if outcome == "gone":  # answered just now: the answer is on its way
                            ended = True
                            return await self._late_answer(queue)
                    ended = True
                    if await self._run("client_end", token) == "gone":
                        return await self._late_answer(queue)
                    return None
                if notice.answer is not None:
                    ended = True
                    return notice.answer
                if notice.closing:
                    return None
                if notice.matched is not None:
                    match_id = notice.matched
                    answer_deadline = loop.time() + notice.answer_ms / 1000
        finally:
            self._held_clients -= 1
            del self._waiters[token]
            if not ended:
                with contextlib.suppress(BrokerError):
                    await self._run("client_end", token)

    async def wait_for_client(
        self, poll: VolunteerPoll, source: str, *, on_held: Callable[[], None]
    ) -> PollOutcome:
        """See :meth:`ferry.broker.store.MatchStore.wait_for_client`."""
        if self._ending:
            return PollOutcome(None, None)
        token = _new_id()
        queue: asyncio.Queue[_Notice] = asyncio.Queue()
        self._waiters[token] = queue
        held = (poll.nat, poll.kind)
        self._held_polls[held] = self._held_polls.get(held, 0) + 1
        settled = False
        try:
            result = await self._run(
                "poll",
                poll.volunteer_id,
                token,
                self.instance,
                poll.pairing or "-",
                _class_of(poll.nat),
                poll.nat,
                poll.kind,
                poll.capacity,
                _ms(self.config.poll_timeout),
                self.config.max_waiting_volunteers,
                _new_id(),
                _ms(self.config.answer_timeout),
                *self._source_arguments("volunteer_poll", source),
                _ms(self.config.client_timeout),
            )
            if result.startswith("limited:"):
                settled = True
                raise RateLimitedError(float(result.removeprefix("limited:")))
            if result == "full":
                settled = True
                raise BrokerError("too many volunteers are waiting for clients; poll again later")
            on_held()
            notice = await self._next_notice(queue, self.config.poll_timeout)
            if notice is not None and notice.ended:  # replaced: the newer poll holds it now
                settled = True
                return PollOutcome(None, None)
            if notice is None or notice.closing:
                settled = True
                if await self._run("poll_end", poll.volunteer_id, token) == "gone":
                    notice = await self._next_notice(queue, NOTICE_GRACE)
            if notice is None or notice.match is None:
                return PollOutcome(None, None)
            settled = True
            return PollOutcome(notice.match, notice.waited_ms / 1000)
        except asyncio.CancelledError:
            if not settled:
                with contextlib.suppress(BrokerError):
                    await self._run("poll_end", poll.volunteer_id, token)
            while not queue.empty():  # a match handed to this poll goes to another volunteer
                match = queue.get_nowait().match
                if match is not None:
                    with contextlib.suppress(BrokerError):
                        await self._requeue("", match.id)
            raise
        finally:
            del self._waiters[token]
            self._held_polls[held] -= 1

    async def deliver_answer(self, answer: VolunteerAnswer) -> bool:
        """See :meth:`ferry.broker.store.MatchStore.deliver_answer`."""
        return await self._run("answer", answer.match_id, answer.answer) == "1"

    def _source_arguments(self, limit: RateLimitName, source: str) -> tuple[str, float, int]:
        shape = self.limits.of(limit)
        return hash_source(self._salt, source), shape.rate, shape.burst

    def available_volunteers(self) -> list[AvailableVolunteers]:
        """See :meth:`ferry.broker.store.MatchStore.available_volunteers`."""
        return [
            AvailableVolunteers(nat, kind, count)
            for (nat, kind), count in self._held_polls.items()
            if count
        ]

    def waiting_clients(self) -> int:
        """See :meth:`ferry.broker.store.MatchStore.waiting_clients`."""
        return self._held_clients

    def end_waits(self) -> None:
        """See :meth:`ferry.broker.store.MatchStore.end_waits`."""
        self._ending = True
        for queue in self._waiters.values():
            queue.put_nowait(_Notice(closing=True))

    async def close(self) -> None:
        """See :meth:`ferry.broker.store.MatchStore.close`."""
        self.end_waits()
        await self._stop_dispatcher()
        await self._tasks.close()
        with contextlib.suppress(RedisError):
            await self._redis.delete(self.prefix + "alive:" + self.instance)
        await self._dispatch_redis.aclose()
        # The pool was made here and handed in, so aclose() would leave its connections open.
        await self._redis.aclose(close_connection_pool=True)

    async def _stop_dispatcher(self) -> None:
        """Let the dispatcher end its round and stop, woken by a notice for no one.

        Cancelling it inside redis-py's blocking read instead was seen to leave the task
        waiting for ever on a closed connection now and then (redis-py 8.2, Python 3.11).
        """
        if self._dispatcher is None or self._dispatcher.done():
            return
        with contextlib.suppress(RedisError):
            await self._redis.rpush(self.prefix + "instance:" + self.instance, '{"to": ""}')
        await asyncio.wait([self._dispatcher], timeout=DISPATCH_BLOCK + NOTICE_GRACE)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
