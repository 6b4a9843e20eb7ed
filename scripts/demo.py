"""The README's demo: start a local broker, then answer prompts on this device or through
it, and say why for each.

Run by ``make demo`` (after the models are pulled). The broker is a real
``cloud-broker serve --dev`` process on a free loopback port, serving Gemma-3-270M as the
"cloud" model; the edge answers with SmolLM2-135M-Instruct. The last two prompts replay
telemetry scenarios (a nearly flat battery, a slow link) to show the threshold move.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_agent import EdgeAgent, load_edge_settings
from edge_agent.cli.main import summary

BROKER_MODEL = "gemma3-270m"

# (prompt, telemetry scenario or None for this device's own, what it shows)
PROMPTS: list[tuple[str, dict[str, Any] | None, str]] = [
    ("What is the capital of France?", None, "an easy question"),
    ("What is 17 times 23?", None, "arithmetic: pre-route skips the local model"),
    ("Write a haiku about rust.", None, "the local model starts badly: early abort"),
    ("Is a tomato a fruit?", None, "a doubtful answer: escalated"),
    (
        "What is the capital of France?",
        {"battery_percent": 8, "power_plugged": False},
        "the easy question again, on 8% battery, unplugged",
    ),
    (
        "Is a tomato a fruit?",
        {"broker_rtt_s": 2.0},
        "the doubtful answer again, over a 2-second link: kept",
    ),
]


def start_broker(store: Path, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    config = workdir / "broker.toml"
    config.write_text(
        f'[models]\nserve = ["{BROKER_MODEL}"]\ndefault = "{BROKER_MODEL}"\n'
        f'store_dir = "{store}"\n[metrics]\nlisten = ""\n'
    )
    command = [sys.executable, "-m", "cloud_broker", "--config", str(config), "serve", "--dev"]
    command += ["--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    address = ""
    for line in proc.stdout:
        if match := re.match(r"listening on (\S+) ", line):
            address = match.group(1)
        if line.startswith("serving") or time.monotonic() > deadline:
            break
    if not address:
        proc.kill()
        raise SystemExit("the demo broker did not start (see its messages above)")
    return proc, address


def main() -> None:
    loaded = load_edge_settings(config_file=None, env=os.environ)
    base = loaded.settings
    with tempfile.TemporaryDirectory(prefix="ridgeline-demo-") as tmp:
        workdir = Path(tmp)
        broker, address = start_broker(base.models.store_dir, workdir)
        print(f"started a local broker on {address} serving {BROKER_MODEL}\n")
        try:
            for number, (prompt, scenario, what) in enumerate(PROMPTS):
                telemetry: dict[str, Any] = {}
                if scenario is not None:
                    trace = workdir / f"scenario-{number}.jsonl"
                    trace.write_text(json.dumps({"t": 0, **scenario}) + "\n")
                    telemetry = {"trace": str(trace)}
                settings = base.model_validate(
                    {
                        **base.model_dump(mode="json", exclude_none=True),
                        "broker": {"address": address, "plaintext": True},
                        "budget": {"state_file": str(workdir / "budget.json")},
                        "generation": {"max_tokens": 48},
                        "telemetry": telemetry,
                    }
                )
                with EdgeAgent(settings, background=False) as agent:
                    answer = agent.ask(prompt)
                print(f"> {prompt}    ({what})")
                print(answer.text.strip() or "(the model returned no text)")
                print(f"[{summary(answer)}]")
                if answer.decision.threshold_terms:
                    print(f"[τ moved by: {answer.decision.threshold_reason}]")
                print()
        finally:
            broker.terminate()
            broker.wait(timeout=30)


if __name__ == "__main__":
    main()
