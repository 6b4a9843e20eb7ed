"""Pure parts of the broker: admission, rate limits, token files, settings, error mapping."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncGenerator
from pathlib import Path

import grpc
import pytest

from cloud_broker.admission import Admission
from cloud_broker.auth import TokenFile, TokenStore, hash_token
from cloud_broker.interceptors import status_of
from cloud_broker.ratelimit import RateLimiter
from cloud_broker.settings import BrokerSettings, load_broker_settings, split_host_port
from ridgeline_core import errors
from ridgeline_core.client import build_request, error_from_rpc
from ridgeline_core.errors import ConfigError, QueueFullError, RateLimitedError


def test_admission_hands_slots_over_in_order_and_refuses_a_full_queue() -> None:
    async def scenario() -> list[str]:
        admission = Admission("m", slots=1, queue=2)
        order: list[str] = []
        await admission.acquire()  # the slot

        async def waiter(name: str) -> None:
            await admission.acquire()
            order.append(name)
            admission.release(0.5)

        first = asyncio.create_task(waiter("first"))
        second = asyncio.create_task(waiter("second"))
        await asyncio.sleep(0)
        assert admission.waiting == 2
        with pytest.raises(QueueFullError) as excinfo:
            await admission.acquire()
        assert excinfo.value.retry_after_s > 0
        admission.release(1.0)
        await asyncio.gather(first, second)
        assert admission.active == 0 and admission.waiting == 0
        return order

    assert asyncio.run(scenario()) == ["first", "second"]


def test_admission_cancelled_waiter_gives_its_place_back() -> None:
    async def scenario() -> None:
        admission = Admission("m", slots=1, queue=1)
        await admission.acquire()
        task = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert admission.waiting == 0
        admission.release()
        assert admission.active == 0
        await admission.acquire()  # free again
        assert admission.active == 1

    asyncio.run(scenario())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_request_bucket_refills_over_a_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=2, tokens_per_minute=0, clock=clock)
    limiter.admit("a")
    limiter.admit("a")
    with pytest.raises(RateLimitedError) as excinfo:
        limiter.admit("a")
    assert excinfo.value.retry_after_s == pytest.approx(30.0)
    limiter.admit("b")  # per device
    clock.now = 30.0
    limiter.admit("a")


def test_token_bucket_charges_after_the_fact() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=0, tokens_per_minute=600, clock=clock)
    limiter.admit("a")
    limiter.charge("a", 900)  # one big answer overdraws by 300
    with pytest.raises(RateLimitedError, match="600 tokens per minute") as excinfo:
        limiter.admit("a")
    assert excinfo.value.retry_after_s == pytest.approx(30.0)
    clock.now = 31.0
    limiter.admit("a")


def test_token_file_stores_only_hashes_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "tokens.json"
    tokens = TokenFile(path)
    token = tokens.add("pi-kitchen")
    assert token.startswith("rl_") and len(token) > 40
    text = path.read_text()
    assert token not in text and hash_token(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="already has a token"):
        tokens.add("pi-kitchen")
    replaced = tokens.add("pi-kitchen", replace=True)
    store = TokenStore(path)
    assert store.authenticate(f"Bearer {replaced}") == "pi-kitchen"
    with pytest.raises(errors.UnauthenticatedError, match="unknown or revoked"):
        store.authenticate(f"Bearer {token}")
    with pytest.raises(errors.UnauthenticatedError, match="missing device token"):
        store.authenticate(None)
    with pytest.raises(errors.UnauthenticatedError, match="Bearer"):
        store.authenticate(f"Basic {replaced}")
    with pytest.raises(errors.InvalidRequestError, match="invalid device id"):
        tokens.add("../escape")
    tokens.revoke("pi-kitchen")
    assert json.loads(path.read_text())["devices"] == {}
    with pytest.raises(ConfigError, match="has no token"):
        tokens.revoke("pi-kitchen")


def test_malformed_token_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read tokens file"):
        TokenStore(path)
    path.write_text('{"devices": {"a": {}}}')
    with pytest.raises(ConfigError, match="malformed"):
        TokenStore(path)


def _settings(**sections: object) -> BrokerSettings:
    return BrokerSettings.model_validate(sections)


def test_settings_refuse_plaintext_off_loopback_and_half_tls() -> None:
    with pytest.raises(ConfigError, match="no TLS configured"):
        _settings().check_transport()
    _settings(server={"allow_plaintext": True, "listen": "[::1]:0"}).check_transport()
    with pytest.raises(ConfigError, match="only served on a loopback"):
        _settings(server={"allow_plaintext": True, "listen": "0.0.0.0:50051"}).check_transport()
    with pytest.raises(ValueError, match="set together"):
        _settings(tls={"cert_file": "/x.pem"})
    with pytest.raises(ValueError, match=r"needs tls\.cert_file"):
        _settings(tls={"client_ca_file": "/ca.pem"})


def test_settings_check_served_models(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="served twice"):
        _settings(openai=[{"name": "gemma3-270m", "base_url": "http://127.0.0.1:1/v1"}])
    with pytest.raises(ValueError, match="is not served"):
        _settings(
            models={"serve": [], "default": "x"},
            openai=[{"name": "y", "base_url": "http://127.0.0.1:1/v1"}],
        )
    with pytest.raises(ValueError, match="must start with http"):
        _settings(openai=[{"name": "y", "base_url": "file:///etc/passwd"}])
    with pytest.raises(ValueError, match="invalid model name"):
        _settings(openai=[{"name": "../y", "base_url": "http://h/v1"}])
    config = tmp_path / "broker.toml"
    config.write_text(
        '[models]\nserve = []\ndefault = "gpt"\n'
        '[[openai]]\nname = "gpt"\nbase_url = "https://api.example.com/v1/"\n'
        'api_key_env = "EXAMPLE_KEY"\n'
    )
    loaded = load_broker_settings(config_file=config, env={})
    assert loaded.settings.openai[0].base_url == "https://api.example.com/v1"
    assert loaded.origins["models.default"].startswith("file ")


def test_split_host_port() -> None:
    assert split_host_port("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_host_port("[::1]:50051") == ("::1", 50051)
    for bad in ("nohost", ":80", "h:x", "h:70000"):
        with pytest.raises(ConfigError):
            split_host_port(bad)


def test_every_error_kind_has_its_status_and_comes_back_as_its_class() -> None:
    cases = [
        (errors.UnknownModelError("m"), grpc.StatusCode.NOT_FOUND),
        (errors.PromptTooLongError.for_prompt(10, 5), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.EmptyPromptError("e"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.UnauthenticatedError("u"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDeniedError("p"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.RateLimitedError("r", 2.5), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.QueueFullError("q", 0.2), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.UnavailableError("d"), grpc.StatusCode.UNAVAILABLE),
        (errors.UnsupportedError("s"), grpc.StatusCode.UNIMPLEMENTED),
        (errors.RequestCancelledError("c"), grpc.StatusCode.CANCELLED),
        (errors.ModelLoadError("l"), grpc.StatusCode.INTERNAL),
    ]
    from cloud_broker.interceptors import _trailers

    for error, code in cases:
        assert status_of(error) == code, error

        class Failed(grpc.RpcError):
            def code(self) -> grpc.StatusCode:
                return code  # noqa: B023

            def details(self) -> str:
                return str(error)  # noqa: B023

            def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
                return _trailers(error)  # noqa: B023

        back = error_from_rpc(Failed())
        assert type(back) is type(error)
        assert str(back) == str(error)
        assert back.status == code.name
        if isinstance(error, errors.OverloadedError):
            assert isinstance(back, errors.OverloadedError)
            assert back.retry_after_s == pytest.approx(error.retry_after_s)


def test_build_request_validates_roles() -> None:
    request = build_request(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        model="m",
        max_tokens=3,
        stop=["\n"],
    )
    assert request.model == "m" and request.params.max_tokens == 3
    assert not request.params.HasField("temperature")
    assert len(request.request_id) == 32
    with pytest.raises(errors.InvalidRequestError, match="role 'robot'"):
        build_request([{"role": "robot", "content": "x"}])


def test_config_show_renders_openai_tables_and_hides_the_key(tmp_path: Path) -> None:
    from ridgeline_core.config import to_toml, tomllib

    config = tmp_path / "broker.toml"
    config.write_text(
        '[models]\nserve = []\ndefault = "gpt"\n'
        '[[openai]]\nname = "gpt"\nbase_url = "https://api.example.com/v1"\n'
        'api_key = "sk-very-secret"\n'
    )
    loaded = load_broker_settings(config_file=config, env={})
    assert loaded.settings.openai[0].api_key.get_secret_value() == "sk-very-secret"
    text = to_toml(loaded.settings, loaded.origins)
    assert "sk-very-secret" not in text
    parsed = tomllib.loads(text)
    assert parsed["openai"][0]["name"] == "gpt"
    assert parsed["llama_cpp"]["slots"] == 1  # tables before the array stay tables


def test_tokens_commands(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDGELINE_")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        RIDGELINE_BROKER_AUTH__TOKENS_FILE=str(tmp_path / "tokens.json"),
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cloud_broker", "tokens", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    added = run("add", "pi-kitchen")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert TokenStore(tmp_path / "tokens.json").authenticate(f"Bearer {token}") == "pi-kitchen"
    assert "shown once" in added.stderr
    again = run("add", "pi-kitchen")
    assert again.returncode == 2 and "--replace" in again.stderr
    listed = run("list", "--json")
    assert json.loads(listed.stdout)[0]["device_id"] == "pi-kitchen"
    assert token not in listed.stdout
    assert run("revoke", "pi-kitchen").returncode == 0
    assert run("revoke", "pi-kitchen").returncode == 2
    bad = run("add", "../../etc")
    assert bad.returncode == 3 and "invalid device id" in bad.stderr


def test_config_show_output_loads_back(tmp_path: Path) -> None:
    from ridgeline_core.config import to_toml

    defaults = load_broker_settings(config_file=None, env={})
    shown = tmp_path / "shown.toml"
    shown.write_text(to_toml(defaults.settings, defaults.origins))
    again = load_broker_settings(config_file=shown, env={})
    assert again.settings == defaults.settings


def test_admission_waiter_dropped_by_release_before_its_cancel_runs() -> None:
    async def scenario() -> None:
        admission = Admission("m", slots=1, queue=2)
        await admission.acquire()
        waiter = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        admission.release()  # skips the cancelled waiter before its task resumes
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert admission.active == 0 and admission.waiting == 0

    asyncio.run(scenario())


def test_auth_off_is_refused_off_loopback() -> None:
    settings = _settings(
        server={"listen": "0.0.0.0:50051"},
        tls={"cert_file": "/c.pem", "key_file": "/k.pem"},
        auth={"enabled": False},
    )
    with pytest.raises(ConfigError, match="without device tokens"):
        settings.check_transport()


def test_unreadable_tokens_file_is_a_config_error_not_a_leak(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot read tokens file"):
        TokenStore(tmp_path / "file" / "tokens.json")


def test_rate_limiter_forgets_idle_devices_only() -> None:
    from cloud_broker import ratelimit

    clock = Clock()
    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=0, clock=clock)
    limit = ratelimit._MAX_DEVICES
    ratelimit._MAX_DEVICES = 3
    try:
        limiter.admit("busy")
        limiter.admit("busy")
        limiter.admit("idle")
        clock.now = 1.5  # "idle" (one credit used) has refilled; "busy" (two) has not
        limiter.admit("third")
        limiter.admit("fourth")  # over the cap: the full buckets are dropped
        assert "busy" in limiter._requests
        assert "idle" not in limiter._requests
    finally:
        ratelimit._MAX_DEVICES = limit


class _FakeContext:
    """A streaming call's context whose writes complete when the test says so."""

    def __init__(self) -> None:
        self.pending: asyncio.Future[None] | None = None
        self.written: list[str] = []
        self.status: tuple[object, str, object] | None = None

    async def send_initial_metadata(self, metadata: object) -> None:
        pass

    async def write(self, message: str) -> None:
        self.pending = asyncio.get_running_loop().create_future()
        await self.pending
        self.written.append(message)

    def set_code(self, code: object) -> None:
        self.status = (code, "", ())

    def set_details(self, details: str) -> None:
        assert self.status is not None
        self.status = (self.status[0], details, ())

    def set_trailing_metadata(self, trailing: object) -> None:
        assert self.status is not None
        self.status = (self.status[0], self.status[1], trailing)


def test_a_write_the_client_never_reads_ends_in_slow_client_error() -> None:
    from cloud_broker.delivery import BoundedWriter

    async def scenario() -> _FakeContext:
        context = _FakeContext()
        writer = BoundedWriter(context, stall_s=0.05)  # type: ignore[arg-type]
        await writer.open()
        with pytest.raises(errors.SlowClientError, match=r"read nothing for 0\.05 s") as stalled:
            await writer.write("x")
        assert context.pending is not None and context.pending.cancelled()
        writer.end(stalled.value)
        return context

    context = asyncio.run(scenario())
    assert context.status is not None
    code, details, trailing = context.status
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "limits.write_stall_s" in details
    assert ("ridgeline-error-kind", "slow_client") in trailing  # type: ignore[operator]


def test_a_cancel_as_the_write_completes_is_not_swallowed() -> None:
    """The client leaving while its write completes still ends the call (asyncio.wait_for
    before Python 3.12 would drop the cancellation and write on)."""
    from cloud_broker.delivery import BoundedWriter

    async def scenario() -> None:
        context = _FakeContext()
        writer = BoundedWriter(context, stall_s=10)  # type: ignore[arg-type]
        task = asyncio.create_task(writer.write("x"))
        while context.pending is None:
            await asyncio.sleep(0)
        context.pending.set_result(None)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_failed_write_ends_the_call_as_cancelled() -> None:
    from cloud_broker.delivery import BoundedWriter

    async def scenario() -> None:
        context = _FakeContext()
        writer = BoundedWriter(context, stall_s=10)  # type: ignore[arg-type]
        task = asyncio.create_task(writer.write("x"))
        while context.pending is None:
            await asyncio.sleep(0)
        context.pending.set_exception(grpc.aio.UsageError("RPC already finished."))
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_buffered_generation_runs_ahead_and_stops_when_closed() -> None:
    """The generation does not wait for its reader; close() stops it and waits for its
    cleanup (where the slot is released)."""
    from cloud_broker.delivery import BufferedGeneration

    cleaned: list[str] = []

    async def source(n: int) -> AsyncGenerator[int, None]:
        try:
            for i in range(n):
                yield i
                await asyncio.sleep(0)
        finally:
            cleaned.append("done")

    async def scenario() -> list[int]:
        finished = BufferedGeneration(source(3))
        await asyncio.sleep(0.01)  # nobody reads: it runs to its end anyway
        assert cleaned == ["done"]
        items = [item async for item in finished]
        endless = BufferedGeneration(source(10**9))
        await asyncio.sleep(0.01)
        await endless.close()
        assert cleaned == ["done", "done"]
        return items

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_buffered_generation_raises_its_failure_to_the_reader() -> None:
    from cloud_broker.delivery import BufferedGeneration

    async def failing() -> AsyncGenerator[str, None]:
        yield "a"
        raise errors.QueueFullError("busy", 1.0)

    async def scenario() -> list[str]:
        read: list[str] = []
        with pytest.raises(errors.QueueFullError):
            async for item in BufferedGeneration(failing()):
                read.append(item)
        return read

    assert asyncio.run(scenario()) == ["a"]
