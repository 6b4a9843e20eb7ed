"""Helpers the test modules share (instead of importing them from each other).

- ``broker_env``: the clean environment of a broker process over the session's store;
- ``gemma_broker``: a ``cloud-broker serve --dev`` process serving Gemma-3-270M as the
  "cloud" model; the session fixture ``shared_broker`` (conftest.py) is one of these for
  every test that only needs *a* broker, started once;
- ``EASY``/``BAD``: the prompts the escalation scenarios use.
"""

from __future__ import annotations

import os
from pathlib import Path

from brokerproc import BrokerProcess

from ridgeline_core.store import ModelStore

GEMMA = "gemma3-270m"

EASY = "What is the capital of France?"
BAD = "Write a haiku about rust."  # SmolLM2 loops on "a thread of life" for all its tokens


def broker_env(model_store: ModelStore, root: Path) -> dict[str, str]:
    """No Ridgeline settings from outside, HOME and XDG dirs under ``root``, the session's
    model store, metrics on a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDGELINE_")}
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_CACHE_HOME=str(root / "cache"),
        RIDGELINE_BROKER_MODELS__STORE_DIR=str(model_store.root),
        RIDGELINE_BROKER_METRICS__LISTEN="127.0.0.1:0",
    )
    return env


def gemma_broker(
    model_store: ModelStore, root: Path, listen: str = "127.0.0.1:0", extra_config: str = ""
) -> BrokerProcess:
    env = broker_env(model_store, root)
    config = f'{extra_config}\n[models]\nserve = ["{GEMMA}"]\ndefault = "{GEMMA}"\n'
    return BrokerProcess(["serve", "--dev", "--listen", listen], env, config=config, tmp_path=root)
