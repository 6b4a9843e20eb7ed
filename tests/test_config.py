"""Layered settings: defaults < TOML file < environment < flags, with origins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cloud_broker.settings import BrokerSettings, load_broker_settings
from edge_agent.settings import EdgeSettings, load_edge_settings
from ridgeline_core.config import load_settings, parse_assignment, to_toml
from ridgeline_core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(autouse=True)
def _isolated_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the user config dir into tmp_path so no real edge.toml/broker.toml is read."""
    xdg = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    return xdg


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults and precedence ---------------------------------------------------------


def test_defaults_only_every_origin_is_default() -> None:
    loaded = load_edge_settings(config_file=None, env={})
    assert loaded.settings == EdgeSettings()
    assert loaded.config_file is None
    assert loaded.settings.runtime.n_ctx == 2048
    assert loaded.settings.confidence.scorer == "margin"
    assert loaded.origins["runtime.n_ctx"] == "default"
    assert loaded.origins["generation.stop"] == "default"
    assert set(loaded.origins.values()) == {"default"}
    # every leaf setting has an origin
    for key in ("models.store_dir", "runtime.threads", "generation.seed", "confidence.scorer"):
        assert key in loaded.origins


def test_precedence_default_file_env_flag(tmp_path: Path) -> None:
    config = write(
        tmp_path / "edge.toml",
        "[runtime]\nthreads = 2\nn_ctx = 1024\nn_batch = 128\n",
    )
    env = {
        "RIDGELINE_EDGE_RUNTIME__THREADS": "3",
        "RIDGELINE_EDGE_RUNTIME__N_CTX": "4096",
    }
    overrides = {"runtime.threads": (4, "--threads 4")}
    loaded = load_edge_settings(config_file=config, env=env, overrides=overrides)
    runtime = loaded.settings.runtime
    assert runtime.threads == 4  # flag beats env and file
    assert runtime.n_ctx == 4096  # env beats file
    assert runtime.n_batch == 128  # file beats default
    assert runtime.n_gpu_layers == 0  # default
    assert loaded.origins["runtime.threads"] == "flag --threads 4"
    assert loaded.origins["runtime.n_ctx"] == "env RIDGELINE_EDGE_RUNTIME__N_CTX"
    assert loaded.origins["runtime.n_batch"] == f"file {config}"
    assert loaded.origins["runtime.n_gpu_layers"] == "default"
    assert loaded.config_file == config


def test_env_names_are_case_insensitive() -> None:
    env = {"ridgeline_edge_runtime__threads": "3", "Ridgeline_Edge_Generation__Top_K": "7"}
    loaded = load_edge_settings(config_file=None, env=env)
    assert loaded.settings.runtime.threads == 3
    assert loaded.settings.generation.top_k == 7
    assert loaded.origins["runtime.threads"] == "env ridgeline_edge_runtime__threads"
    assert loaded.origins["generation.top_k"] == "env Ridgeline_Edge_Generation__Top_K"


def test_env_values_are_converted_to_the_field_type() -> None:
    env = {
        "RIDGELINE_EDGE_GENERATION__TEMPERATURE": "0.7",
        "RIDGELINE_EDGE_GENERATION__SEED": "42",
        "RIDGELINE_EDGE_MODELS__STORE_DIR": "/srv/models",
        "RIDGELINE_EDGE_GENERATION__SYSTEM_PROMPT": "Be brief.",
    }
    settings = load_edge_settings(config_file=None, env=env).settings
    assert settings.generation.temperature == pytest.approx(0.7)
    assert settings.generation.seed == 42
    assert settings.models.store_dir == Path("/srv/models")
    assert settings.generation.system_prompt == "Be brief."


def test_unrelated_env_vars_are_ignored() -> None:
    env = {
        "HOME": "/nowhere",
        "RIDGELINE_BROKER_SERVER__LISTEN": "0.0.0.0:1",  # the broker's, not the edge's
        "RIDGELINE_OTHER": "x",
    }
    loaded = load_edge_settings(config_file=None, env=env)
    assert loaded.settings == EdgeSettings()


def test_list_values_from_env_are_json() -> None:
    env = {
        "RIDGELINE_EDGE_GENERATION__STOP": '["\\n\\n", "END"]',
        "RIDGELINE_EDGE_MODELS__MANIFEST_DIRS": '["/a", "/b/c"]',
    }
    loaded = load_edge_settings(config_file=None, env=env)
    assert loaded.settings.generation.stop == ["\n\n", "END"]
    assert loaded.settings.models.manifest_dirs == [Path("/a"), Path("/b/c")]
    assert loaded.origins["generation.stop"] == "env RIDGELINE_EDGE_GENERATION__STOP"


def test_list_value_that_is_not_json_is_rejected() -> None:
    env = {"RIDGELINE_EDGE_GENERATION__STOP": "[not json"}
    with pytest.raises(ConfigError, match=r"generation\.stop"):
        load_edge_settings(config_file=None, env=env)


def test_file_lists_and_strings(tmp_path: Path) -> None:
    config = write(
        tmp_path / "edge.toml",
        '[generation]\nstop = ["###", "</s>"]\nsystem_prompt = "Hi"\n'
        '[models]\ndefault = "gemma3-270m"\n',
    )
    loaded = load_edge_settings(config_file=config, env={})
    assert loaded.settings.generation.stop == ["###", "</s>"]
    assert loaded.settings.generation.system_prompt == "Hi"
    assert loaded.settings.models.default == "gemma3-270m"
    assert loaded.origins["generation.stop"] == f"file {config}"


# -- which config file ----------------------------------------------------------------


def test_env_config_variable_selects_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "chosen.toml", "[runtime]\nn_ctx = 512\n")
    loaded = load_edge_settings(config_file=None, env={"RIDGELINE_EDGE_CONFIG": str(config)})
    assert loaded.settings.runtime.n_ctx == 512
    assert loaded.config_file == config
    assert loaded.origins["runtime.n_ctx"] == f"file {config}"
    # RIDGELINE_EDGE_CONFIG is not itself treated as a setting
    assert not any(origin.startswith("env ") for origin in loaded.origins.values())


def test_explicit_config_file_beats_env_config_variable(tmp_path: Path) -> None:
    explicit = write(tmp_path / "explicit.toml", "[runtime]\nn_ctx = 256\n")
    other = write(tmp_path / "other.toml", "[runtime]\nn_ctx = 512\n")
    loaded = load_edge_settings(config_file=explicit, env={"RIDGELINE_EDGE_CONFIG": str(other)})
    assert loaded.settings.runtime.n_ctx == 256
    assert loaded.config_file == explicit


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_edge_settings(config_file=missing, env={})
    assert str(missing) in str(info.value)


def test_missing_file_named_by_env_config_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found"):
        load_edge_settings(config_file=None, env={"RIDGELINE_EDGE_CONFIG": str(missing)})


def test_default_user_config_file_is_read_when_present(_isolated_user_config: Path) -> None:
    default = write(_isolated_user_config / "ridgeline" / "edge.toml", "[runtime]\nn_batch = 64\n")
    loaded = load_edge_settings(config_file=None, env={})
    assert loaded.settings.runtime.n_batch == 64
    assert loaded.config_file == default
    assert loaded.origins["runtime.n_batch"] == f"file {default}"


def test_absent_default_user_config_file_is_fine() -> None:
    loaded = load_edge_settings(config_file=None, env={})
    assert loaded.config_file is None


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.toml", "[runtime\nthreads = \n")
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_edge_settings(config_file=config, env={})
    assert str(config) in str(info.value)


def test_config_path_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_edge_settings(config_file=tmp_path, env={})


# -- unknown keys ---------------------------------------------------------------------


def test_unknown_key_in_file_names_the_key(tmp_path: Path) -> None:
    config = write(tmp_path / "edge.toml", "[runtime]\nthredas = 4\n")
    with pytest.raises(ConfigError, match=r"runtime\.thredas") as info:
        load_edge_settings(config_file=config, env={})
    assert str(config) in str(info.value)


def test_unknown_section_in_file_names_the_section(tmp_path: Path) -> None:
    config = write(tmp_path / "edge.toml", "[runtim]\nthreads = 4\n")
    with pytest.raises(ConfigError, match="runtim"):
        load_edge_settings(config_file=config, env={})


def test_unknown_env_var_names_the_variable_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_edge_settings(config_file=None, env={"RIDGELINE_EDGE_RUNTIME__THREDAS": "4"})
    message = str(info.value)
    assert "RIDGELINE_EDGE_RUNTIME__THREDAS" in message
    assert "runtime.thredas" in message
    assert "runtime.threads" in message  # the known keys are listed


def test_unknown_env_section_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"bogus\.key"):
        load_edge_settings(config_file=None, env={"RIDGELINE_EDGE_BOGUS__KEY": "1"})


def test_env_key_below_a_leaf_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.threads\.x"):
        load_edge_settings(config_file=None, env={"RIDGELINE_EDGE_RUNTIME__THREADS__X": "1"})


def test_unknown_override_names_the_key_and_flag() -> None:
    overrides = {"generation.temprature": (0.5, "--set generation.temprature=0.5")}
    with pytest.raises(ConfigError) as info:
        load_edge_settings(config_file=None, env={}, overrides=overrides)
    message = str(info.value)
    assert "generation.temprature" in message
    assert "--set generation.temprature=0.5" in message


# -- invalid values -------------------------------------------------------------------


def test_invalid_value_from_file_names_key_and_origin(tmp_path: Path) -> None:
    config = write(tmp_path / "edge.toml", "[runtime]\nn_ctx = 1\n")
    with pytest.raises(ConfigError) as info:
        load_edge_settings(config_file=config, env={})
    message = str(info.value)
    assert "runtime.n_ctx" in message
    assert f"file {config}" in message


def test_invalid_value_from_env_names_key_and_origin() -> None:
    env = {"RIDGELINE_EDGE_GENERATION__TEMPERATURE": "5"}
    with pytest.raises(ConfigError) as info:
        load_edge_settings(config_file=None, env=env)
    message = str(info.value)
    assert "generation.temperature" in message
    assert "env RIDGELINE_EDGE_GENERATION__TEMPERATURE" in message


def test_invalid_value_from_flag_names_key_and_origin() -> None:
    overrides = {"confidence.scorer": ("nope", "--scorer nope")}
    with pytest.raises(ConfigError) as info:
        load_edge_settings(config_file=None, env={}, overrides=overrides)
    message = str(info.value)
    assert "confidence.scorer" in message
    assert "flag --scorer nope" in message
    assert "tail" in message  # the known scorers are listed


def test_non_integer_value_is_rejected() -> None:
    env = {"RIDGELINE_EDGE_RUNTIME__THREADS": "many"}
    with pytest.raises(ConfigError, match=r"runtime\.threads.*env RIDGELINE_EDGE_RUNTIME__THREADS"):
        load_edge_settings(config_file=None, env=env)


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    config = write(tmp_path / "edge.toml", "[runtime]\nn_ctx = 1\n[generation]\ntop_p = 0\n")
    with pytest.raises(ConfigError) as info:
        load_edge_settings(config_file=config, env={})
    assert "runtime.n_ctx" in str(info.value)
    assert "generation.top_p" in str(info.value)


def test_config_error_exit_code_and_kind() -> None:
    with pytest.raises(ConfigError) as info:
        load_edge_settings(config_file=None, env={"RIDGELINE_EDGE_X__Y": "1"})
    assert info.value.exit_code == 2
    assert info.value.kind == "config"


def test_invalid_list_item_names_its_origin(tmp_path: Path) -> None:
    config = write(tmp_path / "edge.toml", "[generation]\nstop = [1]\n")
    with pytest.raises(ConfigError) as info:
        load_edge_settings(config_file=config, env={})
    assert "generation.stop" in str(info.value)
    assert f"file {config}" in str(info.value)


def test_section_level_env_var_does_not_leave_stale_origins(tmp_path: Path) -> None:
    config = write(tmp_path / "edge.toml", "[runtime]\nthreads = 4\n")
    env = {"RIDGELINE_EDGE_RUNTIME": '{"n_ctx": 4096}'}
    try:
        loaded = load_edge_settings(config_file=config, env=env)
    except ConfigError:
        return  # refusing a whole-section assignment is an acceptable fix
    threads_from_file = loaded.origins["runtime.threads"] == f"file {config}"
    assert loaded.settings.runtime.threads == 4 or not threads_from_file


# -- the broker -----------------------------------------------------------------------


def test_broker_defaults() -> None:
    loaded = load_broker_settings(config_file=None, env={})
    assert loaded.settings == BrokerSettings()
    assert loaded.settings.server.listen == "127.0.0.1:50051"
    assert loaded.settings.models.default == "gemma3-270m"
    assert loaded.origins["models.default"] == "default"


def test_broker_layers(tmp_path: Path) -> None:
    config = write(
        tmp_path / "broker.toml",
        '[server]\nlisten = "0.0.0.0:9000"\n[models]\ndefault = "smollm2-135m-instruct"\n',
    )
    env = {
        "RIDGELINE_BROKER_SERVER__LISTEN": "127.0.0.1:7000",
        "RIDGELINE_EDGE_RUNTIME__THREADS": "3",  # the edge's: ignored, not an error
    }
    overrides = {"models.store_dir": (tmp_path / "store", "--store-dir")}
    loaded = load_broker_settings(config_file=config, env=env, overrides=overrides)
    assert loaded.settings.server.listen == "127.0.0.1:7000"
    assert loaded.settings.models.default == "smollm2-135m-instruct"
    assert loaded.settings.models.store_dir == tmp_path / "store"
    assert loaded.origins["server.listen"] == "env RIDGELINE_BROKER_SERVER__LISTEN"
    assert loaded.origins["models.default"] == f"file {config}"
    assert loaded.origins["models.store_dir"] == "flag --store-dir"


def test_broker_config_env_variable_and_unknown_key(tmp_path: Path) -> None:
    config = write(tmp_path / "b.toml", '[server]\nlisten = "127.0.0.1:1234"\n')
    loaded = load_broker_settings(config_file=None, env={"RIDGELINE_BROKER_CONFIG": str(config)})
    assert loaded.settings.server.listen == "127.0.0.1:1234"
    assert loaded.config_file == config
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_broker_settings(config_file=None, env={"RIDGELINE_BROKER_SERVER__PORT": "1"})
    with pytest.raises(ConfigError, match="config file not found"):
        load_broker_settings(config_file=tmp_path / "missing.toml", env={})


def test_broker_reads_its_own_default_file(_isolated_user_config: Path) -> None:
    write(_isolated_user_config / "ridgeline" / "edge.toml", "[runtime]\nthreads = 2\n")
    default = write(
        _isolated_user_config / "ridgeline" / "broker.toml", '[server]\nlisten = "[::1]:1"\n'
    )
    loaded = load_broker_settings(config_file=None, env={})
    assert loaded.config_file == default
    assert loaded.settings.server.listen == "[::1]:1"


# -- parse_assignment -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("runtime.threads=4", "runtime.threads", 4),
        ("generation.temperature=0.5", "generation.temperature", 0.5),
        ("x.flag=true", "x.flag", True),
        ('generation.stop=["a", "b"]', "generation.stop", ["a", "b"]),
        ("models.default=gemma3-270m", "models.default", "gemma3-270m"),
        ("models.store_dir=/tmp/models", "models.store_dir", "/tmp/models"),
        ("generation.system_prompt=Be brief.", "generation.system_prompt", "Be brief."),
        ('generation.system_prompt="quoted"', "generation.system_prompt", "quoted"),
        ("generation.system_prompt=a=b", "generation.system_prompt", "a=b"),
        ("  runtime.threads = 4", "runtime.threads", 4),
    ],
)
def test_parse_assignment(text: str, key: str, value: object) -> None:
    parsed_key, parsed_value = parse_assignment(text)
    assert parsed_key == key
    assert parsed_value == value
    assert type(parsed_value) is type(value)


@pytest.mark.parametrize("text", ["runtime.threads", "=4", "   =4", ""])
def test_parse_assignment_rejects_malformed(text: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignment(text)


def test_parse_assignment_feeds_overrides() -> None:
    text = "runtime.threads=6"
    key, value = parse_assignment(text)
    loaded = load_edge_settings(config_file=None, env={}, overrides={key: (value, f"--set {text}")})
    assert loaded.settings.runtime.threads == 6
    assert loaded.origins["runtime.threads"] == "flag --set runtime.threads=6"


# -- to_toml --------------------------------------------------------------------------


def test_to_toml_parses_back_and_carries_origins(tmp_path: Path) -> None:
    config = write(tmp_path / "edge.toml", '[generation]\nstop = ["\\n\\n", "Q:"]\n')
    env = {"RIDGELINE_EDGE_RUNTIME__N_CTX": "4096"}
    overrides = {"generation.system_prompt": ('Say "hi"\tthen stop', "--system")}
    loaded = load_edge_settings(config_file=config, env=env, overrides=overrides)
    text = to_toml(loaded.settings, loaded.origins)

    parsed = tomllib.loads(text)

    def without_none(value: Any) -> Any:  # TOML has no null: unset keys are left out
        if isinstance(value, dict):
            return {k: without_none(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [without_none(v) for v in value]
        return value

    expected = without_none(loaded.settings.model_dump(mode="json"))
    for section, values in expected.items():
        for key, value in values.items():
            assert parsed[section][key] == value, f"{section}.{key}"
        assert set(parsed[section]) == set(values), section

    lines = text.splitlines()
    assert any(
        line.startswith("n_ctx = 4096") and "# env RIDGELINE_EDGE_RUNTIME__N_CTX" in line
        for line in lines
    )
    assert any(line.startswith("stop = ") and f"# file {config}" in line for line in lines)
    assert any(line.startswith("system_prompt = ") and "# flag --system" in line for line in lines)
    assert any(
        line.startswith("# n_batch = (unset)") and line.endswith("# default") for line in lines
    )
    # unset values are commented out, not written as a bogus value
    assert any(line.startswith("# threads = (unset)") for line in lines)
    assert "[runtime]" in lines and "[generation]" in lines


def test_to_toml_round_trips_through_load(tmp_path: Path) -> None:
    env = {
        "RIDGELINE_EDGE_RUNTIME__THREADS": "3",
        "RIDGELINE_EDGE_GENERATION__STOP": '["END", "\\u00e9t\\u00e9"]',
        "RIDGELINE_EDGE_MODELS__MANIFEST_DIRS": '["/m1"]',
        "RIDGELINE_EDGE_CONFIDENCE__SCORER": "min",
    }
    original = load_edge_settings(config_file=None, env=env)
    dumped = write(tmp_path / "dump.toml", to_toml(original.settings, original.origins))
    reloaded = load_edge_settings(config_file=dumped, env={})
    assert reloaded.settings == original.settings


def test_to_toml_without_origins_has_no_comments_on_values() -> None:
    text = to_toml(EdgeSettings())
    value_lines = [line for line in text.splitlines() if line and not line.startswith(("[", "#"))]
    assert value_lines
    assert all("#" not in line for line in value_lines)
    tomllib.loads(text)


def test_to_toml_of_broker_settings_parses_back() -> None:
    loaded = load_broker_settings(config_file=None, env={})
    parsed = tomllib.loads(to_toml(loaded.settings, loaded.origins))
    assert parsed["server"]["listen"] == "127.0.0.1:50051"
    assert parsed["models"]["default"] == "gemma3-270m"


def test_to_toml_handles_characters_outside_the_bmp() -> None:
    overrides = {"generation.system_prompt": ("Answer with an emoji \U0001f600", "--system")}
    loaded = load_edge_settings(config_file=None, env={}, overrides=overrides)
    parsed = tomllib.loads(to_toml(loaded.settings, loaded.origins))
    assert parsed["generation"]["system_prompt"] == "Answer with an emoji \U0001f600"


def test_load_settings_custom_prefix(tmp_path: Path) -> None:
    """load_settings itself: the prefix decides which variables are read."""
    loaded = load_settings(
        EdgeSettings,
        config_file=None,
        env={"APP_RUNTIME__N_BATCH": "32", "RIDGELINE_EDGE_RUNTIME__N_BATCH": "64"},
        env_prefix="APP_",
        default_config_file=tmp_path / "absent.toml",
    )
    assert loaded.settings.runtime.n_batch == 32
    assert loaded.config_file is None


# -- import hygiene -------------------------------------------------------------------


def test_importing_packages_does_not_import_llama_cpp() -> None:
    code = (
        "import edge_agent, cloud_broker, ridgeline_core, ridgeline_core.runtime, "
        "ridgeline_core.store, ridgeline.v1.broker_pb2_grpc, sys; "
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_an_empty_environment_variable_counts_as_unset() -> None:
    loaded = load_edge_settings(config_file=None, env={"RIDGELINE_EDGE_MODELS__STORE_DIR": ""})
    assert loaded.origins["models.store_dir"] == "default"
    assert loaded.settings.models.store_dir.name == "models"


def test_manifest_dirs_expand_the_home_directory() -> None:
    env = {"RIDGELINE_EDGE_MODELS__MANIFEST_DIRS": '["~/my-models"]'}
    loaded = load_edge_settings(config_file=None, env=env)
    assert loaded.settings.models.manifest_dirs == [Path("~/my-models").expanduser()]
