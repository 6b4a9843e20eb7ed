"""``GET /openapi.json``: a valid OpenAPI 3.1 description of the daemon's HTTP API, built
from the request body models; and schemathesis, a property-based API fuzzer, run from it
against one real daemon (bounded: the hypothesis profile of conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import schemathesis
from conftest import SMOLLM2, isolated_env, without_proxies
from daemonproc import DaemonProcess
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import EASY

from edge_agent.daemon import openapi
from edge_agent.daemon.bodies import ChatBody
from edge_agent.daemon.http_api import build_app
from ridgeline_core.store import ModelStore

# -- the document ----------------------------------------------------------------------


def test_the_document_is_valid_openapi_built_from_the_body_models() -> None:
    doc = openapi.document()
    schemathesis.openapi.from_dict(doc).validate()  # the OpenAPI 3.1 meta-schema
    with pytest.raises(Exception, match="paths"):  # the check can fail
        schemathesis.openapi.from_dict({**doc, "paths": 5}).validate()
    schemas = doc["components"]["schemas"]
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for op in openapi.OPERATIONS:
        entry = doc["paths"][op.path][op.method]
        if op.body is not None:
            assert set(_properties(schemas[op.body.__name__])) == set(op.body.model_fields)
        error = entry["responses"]["400" if op.method == "post" else "500"]
        assert error["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    chat = schemas["ChatBody"]["properties"]
    assert chat["messages"]["type"] == "array" and "temperature" in chat
    responses = schemas["ResponsesBody"]["properties"]
    bounded = responses["max_output_tokens"]["anyOf"][0]
    assert bounded == {"type": "integer", "minimum": 1, "maximum": 32768}


def test_a_field_added_to_a_body_appears_without_an_edit() -> None:
    class Extended(ChatBody):
        brand_new: int | None = None

    with_new = openapi._schemas(Extended)
    assert "brand_new" in with_new["Extended"]["properties"]


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    return props


def test_every_route_of_the_app_is_described_and_the_key_applies() -> None:
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    async def fetch(key: str | None, auth: str | None) -> tuple[int, Any, list[Any]]:
        metrics = SimpleNamespace(record_error=lambda kind: None)
        app = build_app(lambda: Any, Any, metrics, lambda: key, 1 << 16, True)  # type: ignore[arg-type]
        routes = [r for r in app.router.routes() if r.method != "HEAD"]
        headers = {"Authorization": f"Bearer {auth}"} if auth else {}
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/openapi.json", headers=headers)
            return response.status, await response.json(), routes

    status, doc, routes = asyncio.run(fetch(None, None))
    assert status == 200
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert described == {(r.method.lower(), r.resource.canonical) for r in routes}
    summaries = [op["summary"] for ops in doc["paths"].values() for op in ops.values()]
    assert "undocumented" not in summaries
    assert asyncio.run(fetch("k", None))[0] == 401  # like every route but /health
    assert asyncio.run(fetch("k", "k"))[0] == 200


# -- the fuzzer ----------------------------------------------------------------------------

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SMALL = 4  # tokens: a generated request that runs the model stays cheap


@pytest.fixture(scope="module")
def daemon(
    smollm2_path: Path, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("fuzzed")
    config = (
        f'[models]\ndefault = "{SMOLLM2}"\n[runtime]\nthreads = 2\n'
        f"[generation]\nmax_tokens = {SMALL}\n[telemetry]\nsources = []\n"
        f'[budget]\nstate_file = "{root / "budget.json"}"\n'
    )
    process = DaemonProcess(without_proxies(isolated_env(model_store, root)), root, config=config)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def schema(daemon: DaemonProcess) -> Any:
    return schemathesis.openapi.from_url(daemon.url + "/openapi.json")


def cheap(case: Any) -> None:
    """Token limits at most SMALL, so a generation costs milliseconds."""
    if isinstance(case.body, dict):
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = case.body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > SMALL:
                case.body[key] = SMALL


@pytest.mark.model
def test_answers_whole_and_streamed_conform_to_the_description(schema: Any) -> None:
    """The success shapes, each SSE event included, on requests that surely run the model
    (generated ones mostly fail validation first)."""
    bodies = {
        "/v1/chat/completions": {"messages": [{"role": "user", "content": EASY}]},
        "/v1/completions": {"prompt": EASY},
        "/v1/responses": {"input": EASY, "instructions": "Be brief."},
    }
    for path, body in bodies.items():
        for stream in (False, True):
            case = schema[path]["POST"].Case(body={**body, "stream": stream})
            response = case.call_and_validate(checks=CHECKS)
            assert response.status_code == 200
            kind = "text/event-stream" if stream else "application/json"
            assert response.headers["content-type"][0].startswith(kind)


@pytest.mark.model
@pytest.mark.property  # the @given is inside: `make fuzz` selects it by this mark
@pytest.mark.parametrize("op", openapi.OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_fuzz_the_api_from_its_description(schema: Any, op: openapi.Operation) -> None:
    """Schema-conforming and schema-violating requests: never a 5xx, and every answer has
    a documented status, content type and shape."""
    operation = schema[op.path][op.method.upper()]
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))

    @given(case=strategy)
    def check(case: Any) -> None:
        cheap(case)
        case.call_and_validate(checks=CHECKS)

    check()
