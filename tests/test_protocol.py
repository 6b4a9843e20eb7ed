"""The wire contract: generated code is fresh, and it works over real gRPC."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ridgeline.v1 import broker_pb2 as pb
from ridgeline.v1 import broker_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "genproto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"stale generated code:\n{result.stderr}"


def test_a_changed_proto_is_detected(tmp_path: Path) -> None:
    """The freshness check fails when the committed code differs from what protoc makes."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import genproto
    finally:
        sys.path.pop(0)
    committed = tmp_path / "committed"
    committed.mkdir()
    genproto.generate(committed)
    assert genproto.stale_files(committed) == []
    target = committed / "ridgeline" / "v1" / "broker_pb2.py"
    target.write_text(target.read_text() + "\n# edited by hand\n")
    assert genproto.stale_files(committed) == ["ridgeline/v1/broker_pb2.py"]


def test_type_stubs_are_generated() -> None:
    stubs = {p.name for p in (ROOT / "ridgeline" / "v1").glob("*.pyi")}
    assert stubs == {"broker_pb2.pyi", "broker_pb2_grpc.pyi", "edge_pb2.pyi", "edge_pb2_grpc.pyi"}
    assert (ROOT / "ridgeline" / "v1" / "py.typed").exists()


def test_generate_request_carries_the_edge_draft() -> None:
    request = pb.GenerateRequest(
        request_id="r-1",
        device_id="laptop-7",
        messages=[pb.ChatMessage(role=pb.ROLE_USER, content="What is the capital of France?")],
        params=pb.SamplingParams(max_tokens=64, temperature=0.0, stop=["\n\n"]),
        model="gemma3-270m",
        local_draft=pb.LocalDraft(text="Paris", confidence=0.42, model="smollm2"),
    )
    decoded = pb.GenerateRequest.FromString(request.SerializeToString())
    assert decoded == request
    assert decoded.WhichOneof("target") == "model"
    assert decoded.HasField("local_draft")
    assert decoded.params.HasField("max_tokens") and not decoded.params.HasField("seed")
    strategy = pb.GenerateRequest(strategy=pb.Strategy(kind=pb.Strategy.KIND_CASCADE))
    assert strategy.WhichOneof("target") == "strategy"


class _EchoBroker(pb_grpc.BrokerServicer):
    """A minimal servicer, only to exercise the generated stubs over real gRPC."""

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateResponse]:
        words = request.messages[-1].content.split()
        for word in words:
            yield pb.GenerateResponse(delta=pb.TextDelta(text=word, model="echo"))
        yield pb.GenerateResponse(
            result=pb.GenerateResult(
                finish_reason=pb.FINISH_REASON_STOP,
                models_used=["echo"],
                answer_model="echo",
                usage=pb.Usage(prompt_tokens=len(words), completion_tokens=len(words)),
            )
        )

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[pb.ModelInfo(name="echo", backend="test", role="chat")],
            default_model="echo",
        )


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_BrokerServicer_to_server(_EchoBroker(), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("ridgeline.v1.Broker", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    server.stop(grace=None).wait()


def test_streaming_generate_and_list_models_over_grpc(channel: grpc.Channel) -> None:
    stub = pb_grpc.BrokerStub(channel)
    request = pb.GenerateRequest(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="a b c")])
    responses = list(stub.Generate(request, timeout=10))
    assert [r.delta.text for r in responses[:-1]] == ["a", "b", "c"]
    final = responses[-1]
    assert final.WhichOneof("event") == "result"
    assert final.result.usage.completion_tokens == 3
    listed = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert listed.default_model == "echo"


def test_standard_health_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service="ridgeline.v1.Broker"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
