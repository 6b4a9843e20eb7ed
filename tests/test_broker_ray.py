"""The broker as a Ray Serve application (issue 21), end to end through the project's gRPC
client: two fronts (one per node of the session's two-node cluster, conftest.py) in front
of an autoscaling SmolLM2 deployment, device tokens and a rate limit shared by both fronts,
a replica killed mid-stream, a node leaving, and ``cloud-broker serve --ray`` itself.

One application is deployed for the module; the tests run in file order (the node test
last: it takes the worker node away and adds a new one).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from brokerproc import BrokerProcess
from certs import ServerIdentity, self_signed_server
from conftest import SMOLLM2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import broker_env

from cloud_broker.auth import TokenFile
from cloud_broker.on_ray.app import broker_app, deployment_name
from cloud_broker.on_ray.limits import keeper_name
from cloud_broker.settings import load_broker_settings
from ridgeline_core import errors
from ridgeline_core.client import BrokerClient, TlsOptions
from ridgeline_core.store import ModelStore

pytestmark = pytest.mark.model

APP = "ridgeline-test"
MODEL = deployment_name(SMOLLM2)
RATE = 8  # requests per minute per device
DEVICES = ("dev-a", "dev-rate", "dev-gone", "dev-kill", "load-0", "load-1", "load-2", "dev-node")


def _config(store: Path, tokens_file: Path, identity: ServerIdentity) -> str:
    return f"""
[server]
listen = "127.0.0.1:0"
grace_s = 2
[tls]
cert_file = "{identity.cert_file}"
key_file = "{identity.key_file}"
[auth]
tokens_file = "{tokens_file}"
[limits]
requests_per_minute = {RATE}
[metrics]
listen = "127.0.0.1:0"
[models]
store_dir = "{store}"
serve = ["{SMOLLM2}"]
default = "{SMOLLM2}"
[llama_cpp]
threads = 1
[ray]
app_name = "{APP}"
fronts = 2
front_num_cpus = 0.25
limits_refresh_s = 0.5
[ray.models.{SMOLLM2}]
min_replicas = 1
max_replicas = 2
target_ongoing_requests = 1
upscale_delay_s = 1
downscale_delay_s = 4
metrics_interval_s = 0.5
num_cpus = 0.5
"""


class Deployed:
    def __init__(
        self, fronts: list[str], tokens: dict[str, str], tokens_file: Path, ca: Path
    ) -> None:
        self.fronts = fronts
        self.tokens = tokens
        self.tokens_file = tokens_file
        self.tls = TlsOptions(ca_file=ca)  # every call goes over TLS to the fronts
        self.metrics: list[str] = []

    def client(self, front: int, device: str | None) -> BrokerClient:
        token = None if device is None else self.tokens.get(device, device)
        return BrokerClient(self.fronts[front], token=token, tls=self.tls, timeout_s=120)


@pytest.fixture(scope="module")
def deployed(
    ray_cluster: Any, smollm2_path: Path, model_store: ModelStore, tmp_path_factory: Any
) -> Iterator[Deployed]:
    import ray
    from ray import serve

    root = tmp_path_factory.mktemp("broker-ray")
    tokens_file = root / "tokens.json"
    tokens = {device: TokenFile(tokens_file).add(device) for device in DEVICES}
    identity = self_signed_server(root / "tls", "front")
    config = root / "broker.toml"
    config.write_text(_config(model_store.root, tokens_file, identity), encoding="utf-8")
    settings = load_broker_settings(config_file=config, env={}).settings
    serve.start(proxy_location="Disabled")
    serve.run(broker_app(settings), name=APP, route_prefix=None)
    keeper = ray.get_actor(keeper_name(APP), namespace=settings.ray.namespace)
    fronts = _wait(lambda: ray.get(keeper.fronts.remote()), lambda f: len(f) == 2, 60, "2 fronts")
    try:
        deployed = Deployed(fronts, tokens, tokens_file, identity.cert_file)
        deployed.metrics = ray.get(keeper.metrics.remote())
        yield deployed
    finally:
        serve.delete(APP)
        ray.kill(keeper)


def _wait(read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}: {value}")
        time.sleep(0.2)


def _running_replicas() -> int:
    from ray import serve

    deployment = serve.status().applications[APP].deployments[MODEL]
    return int(deployment.replica_states.get("RUNNING", 0))


def _replicas(deployment: str) -> list[str]:
    """The actor names of the deployment's replicas (Serve names them after it)."""
    import ray

    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    return [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(prefix)
    ]


def _answer(client: BrokerClient, max_tokens: int = 16) -> str:
    text = []
    for event in client.generate("What is the capital of France?", max_tokens=max_tokens):
        if event.HasField("delta"):
            text.append(event.delta.text)
    return "".join(text)


def test_each_front_streams_an_answer(deployed: Deployed) -> None:
    for front in (0, 1):
        credentials = grpc.ssl_channel_credentials(deployed.tls.ca_file.read_bytes())
        with grpc.secure_channel(deployed.fronts[front], credentials) as channel:  # no token
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        with deployed.client(front, "dev-a") as client:
            assert "Paris" in _answer(client)
            listing = client.list_models()
            assert [m.name for m in listing.models] == [SMOLLM2]
    with (
        deployed.client(0, None) as anonymous,
        pytest.raises(errors.UnauthenticatedError),
    ):
        anonymous.list_models()
    assert len(deployed.metrics) == 2  # each front serves its own /metrics
    ok = f'ridgeline_broker_requests_total{{code="OK",model="{SMOLLM2}"}}'
    for url in deployed.metrics:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert any(
            line.startswith(ok) and float(line.split()[-1]) >= 1 for line in text.splitlines()
        )


def test_the_rate_limit_holds_across_both_fronts(deployed: Deployed) -> None:
    """Alone, each front would let the device make RATE requests a minute: together they
    let it make RATE (plus what refills while the test runs), not twice that."""
    started = time.monotonic()
    answered = refused = 0
    clients = [deployed.client(0, "dev-rate"), deployed.client(1, "dev-rate")]
    try:
        for i in range(2 * RATE + 2):
            try:
                clients[i % 2].ask("Hi", max_tokens=1)
                answered += 1
            except errors.RateLimitedError as exc:
                assert exc.status == "RESOURCE_EXHAUSTED" and exc.retry_after_s > 0
                refused += 1
    finally:
        for client in clients:
            client.close()
    refilled = int((time.monotonic() - started) * RATE / 60)
    assert RATE - 1 <= answered <= RATE + refilled
    assert refused == 2 * RATE + 2 - answered


def test_a_revoked_token_is_refused_by_every_front(deployed: Deployed) -> None:
    clients = [deployed.client(0, "dev-gone"), deployed.client(1, "dev-gone")]
    try:
        assert all(_accepted(client) for client in clients)
        TokenFile(deployed.tokens_file).revoke("dev-gone")
        revoked = time.monotonic()
        for client in clients:
            _wait(lambda c=client: _accepted(c), lambda ok: not ok, 5, "the revocation")
        # limits_refresh_s 0.5 and the keeper's once-a-second look at the file
        assert time.monotonic() - revoked < 3.0
    finally:
        for client in clients:
            client.close()


def _accepted(client: BrokerClient) -> bool:
    try:
        client.list_models(timeout_s=10)
    except errors.UnauthenticatedError:
        return False
    return True


def test_a_replica_killed_mid_stream_is_unavailable_then_replaced(deployed: Deployed) -> None:
    import ray

    with deployed.client(0, "dev-kill") as client:
        stream = client.generate("Write a long story about a lighthouse.", max_tokens=400)
        with pytest.raises(errors.UnavailableError) as excinfo:
            for event in stream:
                if event.HasField("delta"):
                    for name in _replicas(MODEL):
                        ray.kill(ray.get_actor(name, namespace="serve"))
        assert excinfo.value.status == "UNAVAILABLE"
        assert "cut short" in str(excinfo.value)
        _wait(_running_replicas, lambda n: n >= 1, 60, "a new replica")
        assert "Paris" in _answer(client)


def test_a_deadline_stops_the_generation_in_the_replica(deployed: Deployed) -> None:
    """The client's deadline cancels the call at the front, the front cancels its handle
    call, and the replica stops generating: its one slot is free for the next call at
    once (were it still writing the 400-token story, the next call would wait seconds)."""
    _wait(_running_replicas, lambda n: n == 1, 60, "one replica")
    with deployed.client(1, "dev-kill") as client:
        with pytest.raises(errors.RidgelineError) as excinfo:
            client.ask("Write a long story about a lighthouse.", max_tokens=400, timeout_s=1.0)
        assert excinfo.value.status == "DEADLINE_EXCEEDED"
        started = time.monotonic()
        assert "Paris" in _answer(client)
        assert time.monotonic() - started < 3.0


def test_autoscales_from_one_replica_to_two_and_back(deployed: Deployed) -> None:
    _wait(_running_replicas, lambda n: n == 1, 60, "one replica before the load")
    stop = threading.Event()
    failures: list[BaseException] = []

    def load(device: str) -> None:
        with deployed.client(0, device) as client:
            while not stop.is_set():
                try:
                    client.ask("Write a long story about a lighthouse.", max_tokens=200)
                except BaseException as exc:  # reported by the test
                    failures.append(exc)
                    return

    threads = [threading.Thread(target=load, args=(f"load-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        _wait(_running_replicas, lambda n: n == 2, 90, "a second replica under load")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not failures, failures
    _wait(_running_replicas, lambda n: n == 1, 90, "back to one replica")


def test_a_restarted_keeper_has_the_limits_and_the_tokens_again(deployed: Deployed) -> None:
    import ray

    keeper = ray.get_actor(keeper_name(APP), namespace="ridgeline")
    ray.kill(keeper, no_restart=False)  # Ray restarts it, as after a crash
    taken, balance, _ = _wait(
        lambda: _lease(keeper), lambda answer: answer is not None, 30, "the keeper back"
    )
    assert taken == 1 + (RATE - 1) // 2 and balance == 60_000  # limited, not unlimited
    for front in (0, 1):
        with deployed.client(front, "dev-a") as client:
            _wait(lambda c=client: _accepted(c), bool, 10, "the token accepted again")
            assert "Paris" in _answer(client)
    with deployed.client(0, "rl_unknown") as stranger:
        assert not _accepted(stranger)


def _lease(keeper: Any) -> Any:
    import ray

    try:
        return ray.get(keeper.lease.remote("probe-device", 0.5), timeout=5)
    except Exception:  # restarting: asked again
        return None


def test_a_node_leaving_does_not_stop_the_broker(deployed: Deployed, ray_cluster: Any) -> None:
    """The worker node (one of the fronts, perhaps the replica) goes away: the head's
    front keeps answering once Serve has put the model on the node that is left."""
    worker = next(iter(ray_cluster.worker_nodes))
    clients = [deployed.client(0, "dev-node"), deployed.client(1, "dev-node")]
    ray_cluster.remove_node(worker)
    try:
        _wait(
            lambda: [_answers(client) for client in clients],
            lambda answered: answered.count(True) == 1,
            90,
            "an answer from the front that is left (and none from the other)",
        )
    finally:
        for client in clients:
            client.close()
        ray_cluster.add_node(num_cpus=2)
        ray_cluster.wait_for_nodes()


def _ray_auth() -> dict[str, str]:
    """Ray's token for a command whose HOME is not this process's (Ray keeps the token
    of the clusters it starts in ~/.ray/auth_token)."""
    token = Path(os.path.expanduser("~/.ray/auth_token"))
    return {"RAY_AUTH_TOKEN_PATH": str(token)} if token.exists() else {}


def _answers(client: BrokerClient) -> bool:
    try:
        return "Paris" in _answer(client)
    except (errors.UnavailableError, grpc.RpcError):
        return False


def test_cloud_broker_serve_on_ray(
    ray_cluster: Any, smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    """The command: deploys its own application on the cluster, prints where its front
    listens, answers, and takes the application down on SIGTERM."""
    from ray import serve

    config = f"""
[models]
serve = ["{SMOLLM2}"]
default = "{SMOLLM2}"
[llama_cpp]
threads = 1
[ray]
app_name = "cli-broker"
front_num_cpus = 0.25
[ray.models.{SMOLLM2}]
num_cpus = 0.5
"""
    env = broker_env(model_store, tmp_path)
    env.update(_ray_auth())
    broker = BrokerProcess(
        ["serve", "--dev", "--listen", "127.0.0.1:0", "--ray", ray_cluster.address],
        env,
        config=config,
        tmp_path=tmp_path,
    )
    try:
        assert "dev on Ray" in broker.stdout_lines[0]
        with BrokerClient(broker.address, plaintext=True, timeout_s=120) as client:
            assert "Paris" in _answer(client)
        ok = f'ridgeline_broker_requests_total{{code="OK",model="{SMOLLM2}"}}'
        assert broker.metrics()[ok] == 1  # the front's endpoint, printed as one process does
        assert broker.stop() == 0
        assert "cli-broker" not in serve.status().applications
    finally:
        broker.kill()
