"""One request options type, parsed the same way at every entry point (SDK keywords, HTTP
bodies and headers, the gRPC edge service), with one set of messages."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from edge_agent import AskOptions, RequestOptions
from edge_agent.daemon import bodies, openai_api
from edge_agent.daemon.grpc_api import options_of
from ridgeline.v1 import edge_pb2
from ridgeline_core import errors
from ridgeline_core.runtime import SamplingParams

MODELS = {"smol": "chat"}


def test_the_sdk_keywords_are_the_options_fields() -> None:
    assert set(typing.get_type_hints(AskOptions)) == set(RequestOptions.model_fields)


def test_options_are_frozen_and_apply_to_the_settings_sampling() -> None:
    options = RequestOptions.parse({"max_tokens": 8, "stop": ["END"], "temperature": 0.7})
    with pytest.raises(Exception, match="frozen"):
        options.max_tokens = 3  # type: ignore[misc]
    base = SamplingParams(max_tokens=64, stop=("</s>",))
    applied = options.sampling(base)
    assert (applied.max_tokens, applied.temperature, applied.stop) == (8, 0.7, ("</s>", "END"))
    assert RequestOptions().sampling(base) is base
    assert options.merged(mode="local").mode == "local"
    assert RequestOptions.parse({"max_tokens": 2.0}).max_tokens == 2  # JSON's 2.0 is 2


@pytest.mark.parametrize(
    ("data", "message", "param"),
    [
        ({"max_tokens": 0}, "max_tokens must be at least 1 (got 0)", "max_tokens"),
        ({"max_tokens": True}, "max_tokens must be a number", "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens must be an integer", "max_tokens"),
        ({"temperature": "hot"}, "temperature must be a number", "temperature"),
        ({"temperature": float("inf")}, "temperature must be a finite number", "temperature"),
        ({"top_p": 0}, "top_p must be greater than 0.0 (got 0)", "top_p"),
        ({"threshold": 1.5}, "threshold must be at most 1.0 (got 1.5)", "threshold"),
        ({"deadline_s": 0}, "deadline_s must be greater than 0.0 (got 0)", "deadline_s"),
        ({"deadline_s": 1e10}, "deadline_s must be at most 3600.0", "deadline_s"),
        ({"mode": "often"}, "mode 'often' is not one of auto, local, cloud", "mode"),
        ({"stop": "END"}, "stop must be a list of non-empty strings", "stop"),
        ({"stop": ["x"] * 9}, "stop has 9 sequences; at most 8", "stop"),
        ({"stop": ["x" * 65]}, "stop sequences must be 1-64 characters (one has 65)", "stop"),
        ({"private": "yes"}, "private must be true or false", "private"),
        ({"colour": "blue"}, "unknown field 'colour'", "colour"),
    ],
)
def test_bad_options_are_refused_with_the_field_and_the_reason(
    data: dict[str, Any], message: str, param: str
) -> None:
    with pytest.raises(errors.InvalidRequestError) as refused:
        RequestOptions.parse(data)
    assert str(refused.value).startswith(message)
    assert refused.value.param == param


def test_http_bodies_and_headers_become_the_same_options() -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 20,
        "stop": "END",
        "ridgeline": {"mode": "cloud", "deadline_s": 5},
    }
    headers = {"x-ridgeline-threshold": "0.3", "x-ridgeline-private": "true"}
    call = openai_api.parse_chat(body, headers, MODELS)
    assert call.options == RequestOptions(
        max_tokens=20, stop=("END",), mode="cloud", threshold=0.3, deadline_s=5, private=True
    )
    with pytest.raises(errors.InvalidRequestError, match="max_tokens must be at least 1"):
        openai_api.parse_chat({**body, "max_completion_tokens": 0}, {}, MODELS)
    with pytest.raises(errors.InvalidRequestError) as bad:
        openai_api.parse_chat({**body, "messages": [{"role": "user", "content": 3}]}, {}, MODELS)
    assert bad.value.param == "messages"
    with pytest.raises(errors.InvalidRequestError, match="private must be true or false"):
        openai_api.parse_chat(body, {"x-ridgeline-private": "maybe"}, MODELS)
    with pytest.raises(errors.InvalidRequestError, match="request body must be a JSON object"):
        openai_api.parse_chat([body], {}, MODELS)


def test_classify_and_embeddings_bodies_are_declared_too() -> None:
    call = bodies.parse_body(bodies.ClassifyBody, {"specialist": "intents", "text": "hi"})
    assert call.options() == RequestOptions()
    with pytest.raises(errors.InvalidRequestError, match="specialist must be the name"):
        bodies.parse_body(bodies.ClassifyBody, {"text": "hi"})
    with pytest.raises(errors.InvalidRequestError, match="mode 'often' is not one of"):
        bodies.parse_body(bodies.ClassifyBody, {"specialist": "s", "text": "t", "mode": "often"})
    with pytest.raises(errors.InvalidRequestError, match=r"input\[0\] is empty"):
        bodies.parse_body(bodies.EmbeddingsBody, {"input": [" "]})


def test_the_grpc_request_becomes_the_same_options() -> None:
    request = edge_pb2.AskRequest(mode="local", stop=["END"], max_tokens=9, private=True)
    assert options_of(request) == RequestOptions(
        mode="local", stop=("END",), max_tokens=9, private=True
    )
    request.threshold = 2.0
    with pytest.raises(errors.InvalidRequestError, match=r"threshold must be at most 1\.0"):
        options_of(request)
    with pytest.raises(errors.InvalidRequestError, match="mode 'often'"):
        options_of(edge_pb2.AskRequest(mode="often"))
