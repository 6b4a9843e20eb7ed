"""The pure logic of the broker on Ray, in process (no cluster): the leased rate limit,
the front's credits, the errors a failed replica call becomes, and the retry of a call
whose replica died before it streamed. tests/test_broker_ray.py runs all of it for real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ray import exceptions as ray_errors
from ray.serve import exceptions as serve_errors

from cloud_broker.backends import BackendRequest, Outcome
from cloud_broker.on_ray.limits import LimitsKeeper, SharedRate
from cloud_broker.on_ray.remote import RemoteBackend
from cloud_broker.on_ray.replica import ReplicaInfo
from cloud_broker.ratelimit import LeasingRateLimiter
from cloud_broker.settings import BrokerSettings
from ridgeline_core import errors
from ridgeline_core.runtime import ChatMessage, SamplingParams


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_leases_never_give_a_device_more_than_its_limit() -> None:
    clock = Clock()
    limiter = LeasingRateLimiter(8, 0, clock=clock)
    taken = []
    while True:
        try:
            taken.append(limiter.take("d", 0.25)[0])
        except errors.RateLimitedError as exc:
            assert exc.retry_after_s == pytest.approx(60 / 8)
            break
    assert sum(taken) == 8 and taken[0] == 2  # one, and a quarter of the seven left
    limiter.give_back("d", 3)
    assert limiter.take("d", 0.0)[0] == 1
    clock.now = 600.0
    limiter.give_back("d", 100)  # never above the limit
    assert limiter.take("d", 1.0)[0] == 8


class Keeper:
    """The keeper's methods as awaitable ``.remote`` calls, in this process; each call
    waits for ``gate`` (so calls can overlap) and fails while ``down`` is set."""

    def __init__(self, keeper: LimitsKeeper) -> None:
        self.keeper = keeper
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.down = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.keeper, name)
        outer = self

        class Remote:
            @staticmethod
            async def remote(*args: Any) -> Any:
                outer.calls += 1
                if outer.gate is not None:
                    await outer.gate.wait()
                if outer.down:
                    raise ray_errors.ActorUnavailableError("restarting", None)
                return method(*args)

        return Remote


def test_a_front_spends_leased_credits_without_asking_and_returns_the_rest() -> None:
    keeper = LimitsKeeper(100, 1000, None)
    remote = Keeper(keeper)
    rate = SharedRate(remote, fronts=2, lease_s=60)

    async def scenario() -> None:
        for _ in range(10):
            await rate.admitted("d")
        assert remote.calls == 1  # 1 + a quarter of the 99 left: 25 credits in one call
        rate.charge("d", 400)
        await rate.settle()
        assert keeper.lease("d", 0.0)[1] == pytest.approx(600, abs=1)
        rate.charge("d", 2000)  # the balance is spent: the next call asks, and is refused
        with pytest.raises(errors.RateLimitedError, match="tokens per minute"):
            await rate.admitted("d")

    asyncio.run(scenario())


def test_concurrent_first_calls_share_one_lease_and_lose_no_credit() -> None:
    keeper = LimitsKeeper(60, 0, None)
    remote = Keeper(keeper)
    rate = SharedRate(remote, fronts=1, lease_s=60)

    async def scenario() -> None:
        remote.gate = asyncio.Event()
        calls = [asyncio.create_task(rate.admitted("d")) for _ in range(4)]
        await asyncio.sleep(0.01)
        remote.gate.set()
        await asyncio.gather(*calls)
        assert remote.calls == 1  # 1 + half of the 59 left: 30, four of them spent
        rate.close()
        await rate.settle()  # the 26 unspent go back
        assert keeper.lease("x", 0.0)[0] == 1  # another device: untouched
        left = keeper.lease("d", 1.0)[0]  # everything the device has left now
        assert left == 60 - 4

    asyncio.run(scenario())


def test_what_the_keeper_could_not_take_is_sent_later() -> None:
    keeper = LimitsKeeper(100, 10_000, None)
    remote = Keeper(keeper)
    rate = SharedRate(remote, fronts=1, lease_s=60)

    async def scenario() -> None:
        await rate.admitted("d")
        rate.charge("d", 700)
        remote.down = True
        with pytest.raises(errors.UnavailableError, match="cannot be reached"):
            await rate.settle()
        remote.down = False
        await rate.settle()
        assert keeper.lease("d", 0.0)[1] == pytest.approx(10_000 - 700, abs=1)

    asyncio.run(scenario())


def test_a_restarted_keeper_keeps_its_limits_and_fronts_fetch_its_tokens(
    tmp_path: Any,
) -> None:
    from cloud_broker.auth import TokenFile
    from cloud_broker.on_ray.limits import SyncedTokens

    tokens_file = tmp_path / "tokens.json"
    token = TokenFile(tokens_file).add("dev-a")
    first = LimitsKeeper(5, 100, str(tokens_file))
    synced = SyncedTokens(Keeper(first), 1.0)
    asyncio.run(synced.sync())
    assert synced.authenticate(f"Bearer {token}") == "dev-a"
    again = LimitsKeeper(5, 100, str(tokens_file))  # what Ray runs when it restarts it
    assert again.lease("d", 1.0)[0] == 5  # the limit, not unlimited
    synced._keeper = Keeper(again)  # the same name now reaches the new instance
    TokenFile(tokens_file).revoke("dev-a")
    asyncio.run(synced.sync())  # same version number, another instance: fetched
    with pytest.raises(errors.UnauthenticatedError):
        synced.authenticate(f"Bearer {token}")


class Call:
    def __init__(self, items: list[Any], fail: BaseException | None) -> None:
        self.items, self.fail, self.cancelled = items, fail, False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._run()

    async def _run(self) -> AsyncIterator[Any]:
        for item in self.items:
            yield [item]  # the replica sends lists of what is ready
        if self.fail is not None:
            raise self.fail

    def cancel(self) -> None:
        self.cancelled = True


class Handle:
    """A deployment handle whose calls play a script: (items, then the failure)."""

    def __init__(self, script: list[tuple[list[Any], BaseException | None]]) -> None:
        self.script, self.calls = list(script), []

    def options(self, **_: Any) -> Handle:
        return self

    @property
    def stream(self) -> Handle:
        return self

    def remote(self, request: Any) -> Call:
        call = Call(*self.script.pop(0))
        self.calls.append(call)
        return call


REQUEST = BackendRequest("r", (ChatMessage("user", "hi"),), SamplingParams(max_tokens=4))
INFO = ReplicaInfo("m", "llama.cpp", "chat", 2048, 1, 4)
DONE = Outcome("stop", 1, 1)


async def _collect(backend: RemoteBackend) -> list[Any]:
    return [item async for item in backend.stream(REQUEST)]


def test_a_call_whose_replica_died_before_streaming_is_sent_again() -> None:
    handle = Handle([([], ray_errors.ActorDiedError()), (["Hel", "lo", DONE], None)])
    assert asyncio.run(_collect(RemoteBackend(handle, INFO, 2))) == ["Hel", "lo", DONE]
    assert len(handle.calls) == 2 and handle.calls[0].cancelled


def test_a_replica_dying_mid_stream_is_unavailable_not_retried() -> None:
    handle = Handle([(["Hel"], ray_errors.ActorDiedError()), (["never"], None)])
    with pytest.raises(errors.UnavailableError, match="cut short"):
        asyncio.run(_collect(RemoteBackend(handle, INFO, 2)))
    assert len(handle.calls) == 1


def test_no_replica_after_three_tries_is_unavailable() -> None:
    handle = Handle([([], ray_errors.ActorDiedError())] * 3)
    with pytest.raises(errors.UnavailableError, match="before it answered"):
        asyncio.run(_collect(RemoteBackend(handle, INFO, 2)))


def test_a_full_queue_is_queue_full_and_backend_errors_come_back_as_they_were() -> None:
    handle = Handle([([], serve_errors.BackPressureError(4, 4, retry_after_s=2.5))])
    with pytest.raises(errors.QueueFullError) as excinfo:
        asyncio.run(_collect(RemoteBackend(handle, INFO, 2)))
    assert excinfo.value.retry_after_s == 2.5
    wrapped = ray_errors.RayTaskError(
        "stream", "traceback", errors.UnsupportedError("no choices here")
    )
    handle = Handle([([], wrapped)])
    with pytest.raises(errors.UnsupportedError, match=r"^no choices here$"):
        asyncio.run(_collect(RemoteBackend(handle, INFO, 2)))


def test_ray_settings_are_checked() -> None:
    served = {"models": {"serve": ["smollm2-135m-instruct"], "default": "smollm2-135m-instruct"}}
    with pytest.raises(ValueError, match="both min_replicas and max_replicas"):
        BrokerSettings.model_validate(
            {**served, "ray": {"models": {"smollm2-135m-instruct": {"min_replicas": 1}}}}
        )
    with pytest.raises(ValueError, match="'gemma3-270m' is not served"):
        BrokerSettings.model_validate({**served, "ray": {"models": {"gemma3-270m": {}}}})
    settings = BrokerSettings.model_validate(
        {**served, "ray": {"models": {"smollm2-135m-instruct": {"replicas": 3}}}}
    )
    assert settings.ray.model("smollm2-135m-instruct").most_replicas == 3


def test_a_replica_sends_the_first_piece_at_once_and_the_rest_together() -> None:
    from cloud_broker.on_ray.replica import _End, _Pieces

    async def scenario() -> list[tuple[list[Any], float]]:
        pieces = _Pieces(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def model() -> None:
            for token in ("a", "b", "c", "d"):
                pieces.ready.put_nowait(token)
                await asyncio.sleep(0.03)
            pieces.ready.put_nowait(_End(None))

        making = asyncio.create_task(model())
        out = []
        while True:
            batch = await pieces.next()
            out.append((batch, loop.time() - started))
            if isinstance(batch[-1], _End):
                await making
                return out

    sent = asyncio.run(scenario())
    assert sent[0][0] == ["a"] and sent[0][1] < 0.05  # the first token is not held back
    assert [piece for batch, _ in sent for piece in batch][:4] == ["a", "b", "c", "d"]
    assert len(sent) == 2  # the rest came within the interval: one more message
    assert sent[1][1] >= 0.2


def test_an_address_that_answers_nothing_is_refused_at_once() -> None:
    import time

    from ridgeline_core.errors import ConfigError
    from ridgeline_core.on_ray import connect_ray

    started = time.monotonic()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(ConfigError, match=r"cannot reach Ray at .*Connection refused"):
            connect_ray(address)
    with pytest.raises(ConfigError, match="use local, auto, HOST:PORT or ray://HOST:PORT"):
        connect_ray("my-cluster")
    assert time.monotonic() - started < 5  # Ray alone retries a dead address for minutes


def test_a_local_ray_refuses_what_its_cpus_cannot_place() -> None:
    from cloud_broker.on_ray.launch import _check_fits
    from ridgeline_core.errors import ConfigError

    served = {"models": {"serve": ["smollm2-135m-instruct"], "default": "smollm2-135m-instruct"}}
    settings = BrokerSettings.model_validate(
        {**served, "ray": {"models": {"smollm2-135m-instruct": {"replicas": 2}}}}
    )
    with pytest.raises(ConfigError, match=r"needs 2\.5 CPUs on Ray and this machine has 2"):
        _check_fits({"CPU": 2.0}, settings)
    _check_fits({"CPU": 4.0}, settings)
    two_fronts = BrokerSettings.model_validate({**served, "ray": {"fronts": 2}})
    with pytest.raises(ConfigError, match="fronts_per_node = 2"):
        _check_fits({"CPU": 8.0}, two_fronts)
