"""The edge-agent and cloud-broker commands: in-process through click's runner (tests/clirun.py),
and as real processes where that is the point (the console scripts, stdin, an exit status)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import BIN, run

from ridgeline_core.store import ModelManifest


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, text: str, *, alone: bool = True
) -> None:
    """The error is one line on stderr (alone, unless progress lines may precede it)."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if alone:
        assert len(lines) == 1, result.stderr
    assert lines[-1].startswith("error: ")
    assert text in lines[-1]


@pytest.fixture
def path_manifests(tmp_path: Path, smollm2_manifest: ModelManifest, smollm2_path: Path) -> Path:
    """A manifest dir with a copy of SmolLM2 under another name, sourced from a local path."""
    directory = tmp_path / "manifests"
    directory.mkdir()
    data = smollm2_manifest.model_dump(exclude={"source", "name"})
    lines = [f"name = {json.dumps('smol-local')}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in data.items() if value is not None]
    lines += ["[source]", 'kind = "path"', f"path = {json.dumps(str(smollm2_path))}"]
    (directory / "smol-local.toml").write_text("\n".join(lines) + "\n")
    return directory


class TestAsk:
    pytestmark = pytest.mark.model

    def test_json_answer_has_the_documented_fields(
        self, edge_env: dict[str, str], smollm2_path: Path
    ) -> None:
        result = run("edge-agent", "ask", "--json", "What is the capital of France?", env=edge_env)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert "Paris" in answer["text"]
        assert answer["source"] == "local"
        assert answer["model"] == "smollm2-135m-instruct"
        assert 0.0 <= answer["confidence"] <= 1.0
        assert answer["finish_reason"] == "stop"
        timings = answer["timings"]
        assert timings["time_to_first_token_s"] > 0
        assert timings["tokens_per_s"] > 0
        assert timings["completion_tokens"] == answer["signals"]["tokens"] > 0

    def test_plain_answer_streams_text_then_confidence_and_timings(
        self, edge_env: dict[str, str], smollm2_path: Path
    ) -> None:
        result = run(
            "edge-agent", "ask", "What is the capital of France?", env=edge_env, process=True
        )
        assert result.returncode == 0, result.stderr
        assert "Paris" in result.stdout
        assert "confidence" in result.stderr
        assert "tok/s" in result.stderr
        assert "first token" in result.stderr

    def test_max_tokens_and_prompt_from_stdin(
        self, edge_env: dict[str, str], smollm2_path: Path
    ) -> None:
        result = run(
            "edge-agent", "ask", "--json", "--max-tokens", "3", "-",
            env=edge_env, stdin="Tell me a long story about the sea.", process=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["timings"]["completion_tokens"] == 3
        assert answer["finish_reason"] == "length"

    def test_prompt_longer_than_the_context(
        self, edge_env: dict[str, str], smollm2_path: Path
    ) -> None:
        result = run("edge-agent", "--set", "runtime.n_ctx=256", "ask", "word " * 400, env=edge_env)
        assert_one_line_error(result, 3, "context holds 256")

    def test_corrupt_model_file(
        self, edge_env: dict[str, str], path_manifests: Path, tmp_path: Path
    ) -> None:
        edge_env["RIDGELINE_EDGE_MODELS__MANIFEST_DIRS"] = json.dumps([str(path_manifests)])
        edge_env["RIDGELINE_EDGE_MODELS__STORE_DIR"] = str(tmp_path / "own-store")
        pulled = run("edge-agent", "models", "pull", "smol-local", env=edge_env)
        assert pulled.returncode == 0, pulled.stderr
        blob = next((tmp_path / "own-store" / "blobs" / "sha256").glob("[0-9a-f]" * 64))
        blob.chmod(0o644)
        with blob.open("r+b") as handle:
            handle.seek(1000)
            handle.write(b"\x00\x01\x02")
        result = run("edge-agent", "ask", "--model", "smol-local", "hi", env=edge_env)
        assert_one_line_error(result, 6, "sha256 mismatch")
        result = run("edge-agent", "models", "verify", "smol-local", env=edge_env)
        assert_one_line_error(result, 6, "sha256 mismatch", alone=False)


class TestAskErrors:
    def test_unknown_model(self, edge_env: dict[str, str]) -> None:
        result = run("edge-agent", "ask", "--model", "smollm3", "hi", env=edge_env, process=True)
        assert_one_line_error(result, 4, "unknown model 'smollm3'")
        assert "did you mean smollm2-135m-instruct" in result.stderr

    def test_path_like_model_name(self, edge_env: dict[str, str]) -> None:
        result = run("edge-agent", "ask", "--model", "../../etc/passwd", "hi", env=edge_env)
        assert_one_line_error(result, 4, "invalid model name")

    def test_model_not_pulled(self, edge_env: dict[str, str], tmp_path: Path) -> None:
        edge_env["RIDGELINE_EDGE_MODELS__STORE_DIR"] = str(tmp_path / "empty-store")
        result = run("edge-agent", "ask", "hi", env=edge_env)
        assert_one_line_error(result, 5, "edge-agent models pull smollm2-135m-instruct")

    @pytest.mark.parametrize("prompt", ["", "   \n\t"])
    def test_empty_prompt(self, edge_env: dict[str, str], prompt: str) -> None:
        result = run("edge-agent", "ask", prompt, env=edge_env)
        assert_one_line_error(result, 3, "prompt is empty")

    def test_json_mode_reports_the_error_as_json_too(self, edge_env: dict[str, str]) -> None:
        result = run("edge-agent", "ask", "--json", "--model", "nope", "hi", env=edge_env)
        assert result.returncode == 4
        error = json.loads(result.stdout)["error"]
        assert error["kind"] == "unknown_model"
        assert "nope" in error["message"]

    def test_bad_setting(self, edge_env: dict[str, str]) -> None:
        edge_env["RIDGELINE_EDGE_RUNTIME__THREADZ"] = "2"
        result = run("edge-agent", "ask", "hi", env=edge_env)
        assert_one_line_error(result, 2, "unknown setting 'runtime.threadz'")


class TestStoreAndManifestErrors:
    def test_a_store_that_cannot_be_created(self, edge_env: dict[str, str], tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        edge_env["RIDGELINE_EDGE_MODELS__STORE_DIR"] = str(blocker / "store")
        result = run("edge-agent", "models", "pull", env=edge_env)
        assert_one_line_error(result, 9, "model store")

    def test_a_missing_manifest_dir_is_a_config_error(
        self, edge_env: dict[str, str], tmp_path: Path
    ) -> None:
        missing = tmp_path / "no-such-dir"
        result = run(
            "edge-agent", "--set", f"models.manifest_dirs=['{missing}']", "models", "list",
            env=edge_env,
        )  # fmt: skip
        assert_one_line_error(result, 2, f"no such directory: {missing}")

    def test_a_closed_pipe_is_not_an_error_report(self, edge_env: dict[str, str]) -> None:
        listing = subprocess.Popen(
            [str(BIN / "edge-agent"), "config", "show"],
            env=edge_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert listing.stdout is not None and listing.stderr is not None
        listing.stdout.close()  # the reader goes away, like `| head -0`
        _, stderr = listing.communicate(timeout=60)
        assert b"internal error" not in stderr and b"Traceback" not in stderr


class TestModelsCommands:
    pytestmark = pytest.mark.model

    def test_list_shows_bundled_models_and_store_state(
        self, edge_env: dict[str, str], smollm2_path: Path
    ) -> None:
        result = run("edge-agent", "models", "list", "--json", env=edge_env)
        assert result.returncode == 0, result.stderr
        rows = {row["name"]: row for row in json.loads(result.stdout)["models"]}
        assert rows["smollm2-135m-instruct"]["pulled"] is True
        assert rows["smollm2-135m-instruct"]["default"] is True
        assert rows["gemma3-270m"]["role"] == "base"
        table = run("edge-agent", "models", "list", env=edge_env)
        assert "smollm2-135m-instruct" in table.stdout
        assert "pulled" in table.stdout
        assert "smollm2-135m-instruct *" in table.stdout  # the default, on one line

    def test_pull_verify_rm_cycle(
        self, edge_env: dict[str, str], path_manifests: Path, tmp_path: Path
    ) -> None:
        edge_env["RIDGELINE_EDGE_MODELS__MANIFEST_DIRS"] = json.dumps([str(path_manifests)])
        edge_env["RIDGELINE_EDGE_MODELS__STORE_DIR"] = str(tmp_path / "own-store")
        pulled = run("edge-agent", "models", "pull", "smol-local", env=edge_env)
        assert pulled.returncode == 0, pulled.stderr
        assert "pulled smol-local" in pulled.stdout
        assert "copying" in pulled.stderr  # progress, one line per phase when not a terminal
        again = run("edge-agent", "models", "pull", "smol-local", env=edge_env)
        assert "already present and verified" in again.stdout
        verified = run("edge-agent", "models", "verify", "smol-local", env=edge_env)
        assert verified.returncode == 0 and "ok: smol-local" in verified.stdout
        removed = run("edge-agent", "models", "rm", "smol-local", env=edge_env)
        assert removed.returncode == 0 and "removed smol-local" in removed.stdout
        missing = run("edge-agent", "models", "rm", "smol-local", env=edge_env)
        assert_one_line_error(missing, 5, "not in the store")
        unpulled = run("edge-agent", "models", "verify", "smol-local", env=edge_env)
        assert_one_line_error(unpulled, 5, "models pull smol-local")


class TestConfigShow:
    def test_precedence_file_env_flag(self, edge_env: dict[str, str], tmp_path: Path) -> None:
        config = tmp_path / "edge.toml"
        config.write_text("[runtime]\nthreads = 1\nn_ctx = 1024\nn_batch = 64\n")
        edge_env["RIDGELINE_EDGE_RUNTIME__N_CTX"] = "4096"
        edge_env["RIDGELINE_EDGE_RUNTIME__N_BATCH"] = "128"
        result = run(
            "edge-agent", "--config", str(config), "--set", "runtime.n_batch=256",
            "config", "show", "--json", env=edge_env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        runtime = shown["settings"]["runtime"]
        assert (runtime["threads"], runtime["n_ctx"], runtime["n_batch"]) == (1, 4096, 256)
        origins = shown["origins"]
        assert origins["runtime.threads"] == f"file {config}"
        assert origins["runtime.n_ctx"] == "env RIDGELINE_EDGE_RUNTIME__N_CTX"
        assert origins["runtime.n_batch"] == "flag --set runtime.n_batch=256"
        assert origins["generation.max_tokens"] == "default"

    def test_toml_output_names_origins(self, edge_env: dict[str, str]) -> None:
        result = run("edge-agent", "--set", "runtime.threads=3", "config", "show", env=edge_env)
        assert result.returncode == 0, result.stderr
        assert "threads = 3  # flag --set runtime.threads=3" in result.stdout
        assert "[generation]" in result.stdout

    def test_user_config_file_is_read_from_the_config_dir(
        self, edge_env: dict[str, str], tmp_path: Path
    ) -> None:
        if sys.platform != "linux":
            pytest.skip("XDG_CONFIG_HOME applies on Linux")
        config_dir = Path(edge_env["XDG_CONFIG_HOME"]) / "ridgeline"
        config_dir.mkdir(parents=True)
        (config_dir / "edge.toml").write_text('[models]\ndefault = "gemma3-270m"\n')
        result = run("edge-agent", "config", "show", "--json", env=edge_env)
        assert json.loads(result.stdout)["settings"]["models"]["default"] == "gemma3-270m"

    def test_missing_config_file(self, edge_env: dict[str, str], tmp_path: Path) -> None:
        result = run(
            "edge-agent", "--config", str(tmp_path / "nope.toml"), "config", "show", env=edge_env
        )
        assert_one_line_error(result, 2, "config file not found")

    def test_broker_has_its_own_settings(self, edge_env: dict[str, str]) -> None:
        edge_env["RIDGELINE_BROKER_SERVER__LISTEN"] = "127.0.0.1:6000"
        result = run("cloud-broker", "config", "show", "--json", env=edge_env)
        assert result.returncode == 0, result.stderr
        settings = json.loads(result.stdout)["settings"]
        assert settings["server"]["listen"] == "127.0.0.1:6000"
        assert settings["models"]["default"] == "gemma3-270m"


def test_version_and_help(edge_env: dict[str, str]) -> None:
    for command in ("edge-agent", "cloud-broker"):
        assert run(command, "--version", env=edge_env, process=True).returncode == 0
        helped = run(command, "--help", env=edge_env, process=True)
        assert helped.returncode == 0 and "models" in helped.stdout
    assert os.access(BIN / "edge-agent", os.X_OK)
