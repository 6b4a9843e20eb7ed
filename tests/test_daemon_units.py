"""Pure logic of the daemon and the SDK: the OpenAI wire format, admission, cancel tokens,
the runtime pool's leases, conversations and per-request options. The end-to-end
behaviour is in test_daemon.py."""

from __future__ import annotations

import asyncio
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent import RequestOptions
from edge_agent.daemon import openai_api
from edge_agent.daemon.dispatch import Admission
from edge_agent.daemon.server import _prepare_socket, check_binds
from edge_agent.request.conversation import conversation
from edge_agent.sdk.api import Answerer, Done, Prompt, TextChunk
from edge_agent.settings import EdgeSettings, grpc_target
from ridgeline_core import errors
from ridgeline_core.cancel import CancelToken
from ridgeline_core.runtime import ChatMessage, RuntimePool, SamplingParams
from ridgeline_core.runtime import pool as pool_module

MODELS = {"smol": "chat", "minilm": "embedding"}


def chat(**body: Any) -> openai_api.Call:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return openai_api.parse_chat(body, {}, MODELS)


# -- the OpenAI wire format --------------------------------------------------------------


def test_chat_options_map_to_the_agent() -> None:
    call = chat(
        model="smol",
        max_tokens=10,
        max_completion_tokens=20,
        temperature=0.5,
        top_p=0.9,
        seed=7,
        stop="END",
        ridgeline={"mode": "cloud", "threshold": 0.3, "deadline_s": 5},
    )
    assert call.options == RequestOptions(
        model="smol",
        max_tokens=20,  # the newer name wins
        temperature=0.5,
        top_p=0.9,
        seed=7,
        stop=["END"],
        mode="cloud",
        threshold=0.3,
        deadline_s=5.0,
    )
    assert not call.stream


def test_default_model_aliases_and_header_mode() -> None:
    for alias in ("", "default", "ridgeline", "auto"):
        assert chat(model=alias).options.model is None
    call = openai_api.parse_chat(
        {"messages": [{"role": "user", "content": "hi"}]}, {"x-ridgeline-mode": "local"}, MODELS
    )
    assert call.options.mode == "local"


def test_message_content_parts_and_roles() -> None:
    call = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ]
    )
    assert call.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ab"},
    ]
    with pytest.raises(errors.UnsupportedError, match="role 'tool'"):
        chat(messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(errors.UnsupportedError, match="text only"):
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        ({"messages": []}, errors.InvalidRequestError, "non-empty"),
        ({"temperature": "hot"}, errors.InvalidRequestError, "temperature must be a number"),
        ({"max_tokens": 1.5}, errors.InvalidRequestError, "integer"),
        ({"n": 3}, errors.UnsupportedError, "n must be 1"),
        ({"tools": [{"type": "function"}]}, errors.UnsupportedError, "tools"),
        ({"frobnicate": 1}, errors.InvalidRequestError, "unknown field 'frobnicate'"),
        ({"model": "gpt-9"}, errors.UnknownModelError, "local models: minilm, smol"),
        ({"model": "minilm"}, errors.UnsupportedError, "embedding model"),
        ({"ridgeline": {"mode": "often"}}, errors.InvalidRequestError, "auto, local, cloud"),
        ({"ridgeline": {"colour": 1}}, errors.InvalidRequestError, "unknown Ridgeline option"),
        ({"ridgeline": {"threshold": "x"}}, errors.InvalidRequestError, "threshold"),
        ({"stream": "yes"}, errors.InvalidRequestError, "stream must be"),
        ({"response_format": {"type": "json_object"}}, errors.UnsupportedError, "text"),
    ],
)
def test_bad_chat_requests_are_refused_with_the_reason(
    body: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        chat(**body)


def test_completion_prompt_is_one_user_turn() -> None:
    call = openai_api.parse_completion({"prompt": ["Say hi"], "stream": True}, {}, MODELS)
    assert call.prompt == "Say hi" and call.stream and call.id.startswith("cmpl-")
    with pytest.raises(errors.InvalidRequestError, match="one prompt per request"):
        openai_api.parse_completion({"prompt": ["a", "b"]}, {}, MODELS)


def test_errors_map_to_statuses_and_openai_codes() -> None:
    cases = [
        (errors.PromptTooLongError.for_prompt(5000, 2048), 400, "context_length_exceeded"),
        (errors.EmptyPromptError("empty"), 400, "empty_prompt"),
        (errors.UnknownModelError("no"), 404, "model_not_found"),
        (errors.UnauthenticatedError("key"), 401, "invalid_api_key"),
        (errors.QueueFullError("busy", retry_after_s=1), 503, "queue_full"),
        (errors.UnavailableError("down"), 503, "unavailable"),
        (errors.IntegrityError("tampered"), 500, "integrity"),
    ]
    for error, status, code in cases:
        assert openai_api.status_of(error)[0] == status
        assert openai_api.error_body(error)["error"]["code"] == code


# -- admission ----------------------------------------------------------------------------


def test_admission_queues_then_refuses_at_once() -> None:
    async def scenario() -> list[str]:
        admission = Admission(slots=1, queue=1)
        log: list[str] = []
        await admission.enter()  # running
        waiter = asyncio.create_task(admission.enter())  # queued
        await asyncio.sleep(0)
        assert admission.waiting == 1
        with pytest.raises(errors.QueueFullError, match=r"daemon.slots 1, daemon.queue 1"):
            await admission.enter()
        log.append("refused")
        admission.leave()
        await asyncio.wait_for(waiter, 1)
        log.append("admitted")
        assert (admission.running, admission.waiting) == (1, 0)
        waiter2 = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        waiter2.cancel()  # a client that gives up while queued leaves the queue
        with pytest.raises(asyncio.CancelledError):
            await waiter2
        assert admission.waiting == 0
        admission.resize(slots=2, queue=0)  # one more slot: the next caller goes at once
        await asyncio.wait_for(admission.enter(), 1)
        assert admission.running == 2
        return log

    assert asyncio.run(scenario()) == ["refused", "admitted"]


# -- cancel tokens ------------------------------------------------------------------------


def test_cancel_token_runs_callbacks_once() -> None:
    token = CancelToken()
    calls: list[str] = []
    undo = token.on_cancel(lambda: calls.append("a"))
    token.on_cancel(lambda: calls.append("b"))
    undo()
    token.check()  # not cancelled: no error
    token.cancel("client gone")
    token.cancel("again")
    assert calls == ["b"]
    assert token.reason == "client gone"
    with pytest.raises(errors.RequestCancelledError, match="client gone"):
        token.check()
    token.on_cancel(lambda: calls.append("late"))  # already cancelled: runs at once
    assert calls == ["b", "late"]


# -- conversations and options ------------------------------------------------------------


def test_conversation_keeps_a_chat_and_finds_the_question() -> None:
    messages, question = conversation(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
         ChatMessage("user", "Capital of France?")],
        "Be brief.",
    )  # fmt: skip
    assert question == "Capital of France?"
    assert messages[0] == ChatMessage("system", "Be brief.")
    own, _ = conversation(
        [{"role": "system", "content": "Mine"}, {"role": "user", "content": "x"}], "Be brief."
    )
    assert [m.content for m in own if m.role == "system"] == ["Mine"]
    for bad, text in [
        ([], "no messages"),
        ([{"role": "assistant", "content": "x"}], "last message must be the user's"),
        ([{"role": "wizard", "content": "x"}], "role 'wizard'"),
        ([{"role": "user", "content": 3}], "no text content"),
        ([{"role": "user", "content": " "}], "empty"),
        ("  ", "empty"),
    ]:
        with pytest.raises(errors.InvalidRequestError, match=text):
            conversation(bad, None)  # type: ignore[arg-type]


def test_request_sampling_overrides_are_checked() -> None:
    base = SamplingParams(max_tokens=64, stop=("</s>",))

    def _sampling(*args: Any) -> SamplingParams:
        keys = ("max_tokens", "temperature", "top_p", "seed", "stop")
        return RequestOptions.parse(dict(zip(keys, args, strict=True))).sampling(base)

    changed = _sampling(8, 0.7, 0.5, 3, ["END"])
    assert (changed.max_tokens, changed.temperature, changed.top_p, changed.seed) == (
        8,
        0.7,
        0.5,
        3,
    )
    assert changed.stop == ("</s>", "END")
    assert _sampling(None, None, None, None, None) is base
    for args, text in [
        ((0, None, None, None, None), "max_tokens"),
        ((None, 3.0, None, None, None), "temperature"),
        ((None, None, 0.0, None, None), "top_p"),
        ((None, None, None, -1, None), "seed"),
        ((None, None, None, None, "END"), "list of non-empty strings"),
    ]:
        with pytest.raises(errors.InvalidRequestError, match=text):
            _sampling(*args)


# -- binding rules ------------------------------------------------------------------------


def test_public_binds_need_a_key(tmp_path: Path) -> None:
    def settings(**daemon: Any) -> EdgeSettings:
        return EdgeSettings.model_validate({"daemon": daemon})

    assert check_binds(settings(http="127.0.0.1:0", grpc="unix:/tmp/x.sock")) is None
    assert check_binds(settings(http="[::1]:8177", grpc="")) is None
    with pytest.raises(errors.ConfigError, match=r"http 0.0.0.0:8177 .*daemon.api_key"):
        check_binds(settings(http="0.0.0.0:8177"))
    with pytest.raises(errors.ConfigError, match=r"grpc 192\.168\.1\.5:9000"):
        check_binds(settings(http="", grpc="192.168.1.5:9000"))
    key = tmp_path / "key"
    key.write_text("k\n")
    assert check_binds(settings(http="0.0.0.0:8177", api_key_file=str(key))) == "k"
    with pytest.raises(errors.ConfigError, match="api_key_file"):
        check_binds(settings(http="0.0.0.0:8177", api_key_file=str(tmp_path / "none")))
    with pytest.raises(errors.ConfigError, match="must be absolute"):
        grpc_target("unix:relative.sock")


def test_the_socket_directory_must_be_private(tmp_path: Path) -> None:
    fresh = tmp_path / "run" / "ridgeline"
    _prepare_socket(fresh / "edge.sock")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(errors.ConfigError, match=r"must belong to this user .*chmod 700"):
        _prepare_socket(shared / "edge.sock")
    shared.chmod(0o755)  # readable by others is fine: only writing there is a risk
    _prepare_socket(shared / "edge.sock")


# -- the runtime pool's leases ------------------------------------------------------------


class FakeRuntime:
    def __init__(self, index: int) -> None:
        self.index = index
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeStore:
    def open_verified(self, manifest: Any, progress: Any) -> Path:
        return Path("/dev/null")


class FakeCatalog:
    def get(self, name: str) -> Any:
        class Manifest:
            pass

        manifest = Manifest()
        manifest.name = name  # type: ignore[attr-defined]
        manifest.sha256 = "0" * 64  # type: ignore[attr-defined]
        return manifest


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[FakeRuntime]:
    made: list[FakeRuntime] = []

    def load(manifest: Any, path: Path, options: Any) -> FakeRuntime:
        made.append(FakeRuntime(len(made)))
        return made[-1]

    monkeypatch.setattr(pool_module, "load_runtime", load)
    return made


def test_pool_lends_each_copy_to_one_request(loads: list[FakeRuntime]) -> None:
    from ridgeline_core.runtime import LoadOptions

    pool = RuntimePool(FakeCatalog(), FakeStore(), LoadOptions(), instances=2)  # type: ignore[arg-type]
    with pool.lease("m") as a, pool.lease("m") as b:
        assert a is not b and len(loads) == 2
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.get("m")))
        waiter.start()
        time.sleep(0.1)
        assert not got  # both copies are lent: the third request waits
        assert pool.busy() == 2
    waiter.join(2)
    assert got and len(loads) == 2  # it got a returned copy, no third load
    with pool.lease("m"):
        assert pool.unload_idle(0.0) == []  # a lent model is not unloaded
    assert pool.unload_idle(0.0) == ["m"]
    assert all(r.closed for r in loads) and pool.loaded() == []
    with pool.lease("m") as again:
        assert again is loads[2]  # loaded again on use
        pool.close()
        assert not again.closed  # closed when its request gives it back
    assert again.closed


# -- the SDK's async methods --------------------------------------------------------------


class Gated(Answerer):
    """Streams one chunk, then waits for the gate (or its cancel) before answering."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.cancelled: list[str] = []

    def _events(self, prompt: Prompt, cancel: CancelToken, options: RequestOptions) -> Any:
        yield TextChunk(str(prompt))
        while not self.gate.wait(0.01):
            if cancel.cancelled:
                self.cancelled.append(cancel.reason)
                cancel.check()
        yield Done(answer=str(prompt))  # type: ignore[arg-type]

    def models(self) -> list[Any]:
        return []


def test_many_async_streams_run_at_once_and_leaving_one_cancels_it() -> None:
    gated = Gated()

    async def first_chunk(index: int) -> str:
        async for event in gated.stream_async(f"q{index}"):
            assert isinstance(event, TextChunk)
            return event.text  # leaving early cancels this request
        raise AssertionError("no event")

    async def scenario() -> list[str]:
        # more than the default executor's threads (cores + 4): none may wait for another
        return await asyncio.wait_for(asyncio.gather(*(first_chunk(i) for i in range(24))), 10)

    assert asyncio.run(scenario()) == [f"q{i}" for i in range(24)]
    assert wait_for(lambda: len(gated.cancelled) == 24, 5.0)
    assert set(gated.cancelled) == {"the stream was closed before its end"}


def test_ask_async_returns_the_answer() -> None:
    gated = Gated()
    gated.gate.set()
    assert asyncio.run(gated.ask_async("hello")) == "hello"


def wait_for(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False
