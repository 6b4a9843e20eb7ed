"""The files under packaging/: what systemd, launchd, Kubernetes' schemas and the project's own
code say about them, and whether the pieces agree (ports, paths, Secret keys, build flags).

Nothing here builds the image or talks to a cluster; the container health check runs against
a real broker process (fronting an upstream it never calls, so no model is loaded).
"""

from __future__ import annotations

import fnmatch
import json
import os
import plistlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from brokerproc import BrokerProcess
from test_broker_tls import Issued, issue, make_ca

from cloud_broker.settings import ENV_PREFIX as BROKER_ENV_PREFIX
from cloud_broker.settings import BrokerSettings, load_broker_settings, split_host_port
from ridgeline_core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
SYSTEMD = PACKAGING / "systemd"
UNIT = SYSTEMD / "ridgeline-edge.service"
DROP_INS = ("jetson.conf", "raspberry-pi.conf")
LAUNCH_AGENT = PACKAGING / "launchd/com.ridgeline.edge-agent.plist"
CONTAINER = PACKAGING / "container"
KUBERNETES = PACKAGING / "kubernetes"
VENV_BIN = Path(sys.executable).parent
EDGE_AGENT = VENV_BIN / "edge-agent"
# the oldest Kubernetes the manifests are meant for, and the newest schema bundled
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


# -- systemd ------------------------------------------------------------------------------------

Unit = dict[str, list[tuple[str, str]]]


def read_unit(*paths: Path) -> Unit:
    """Sections of a unit and its drop-ins, every assignment kept in order (keys repeat)."""
    sections: Unit = {}
    for path in paths:
        current: list[tuple[str, str]] | None = None
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), [])
                continue
            assert current is not None, f"{path}: {line!r} outside a section"
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit: Unit, key: str, section: str = "Service") -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


def unit_value(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit_values(unit, key, section)
    assert values, f"{key}= is not set in [{section}]"
    return values[-1]


def unit_environment(unit: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit_values(unit, "Environment"):
        for assignment in shlex.split(value):
            name, _, setting = assignment.partition("=")
            env[name] = setting
    return env


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def exec_start(unit: Unit) -> list[str]:
    return shlex.split(unit_value(unit, "ExecStart"))


def installable_copy(directory: Path, drop_ins: tuple[str, ...] = ()) -> Path:
    """The unit in ``directory`` with ExecStart's binary replaced by this venv's edge-agent
    (systemd-analyze checks that it exists), plus the given drop-ins next to it."""
    unit = directory / UNIT.name
    text = UNIT.read_text(encoding="utf-8")
    binary = exec_start(read_unit(UNIT))[0]
    assert text.count(binary) == 1
    unit.write_text(text.replace(binary, str(EDGE_AGENT)), encoding="utf-8")
    if drop_ins:
        drop_in_dir = directory / f"{UNIT.name}.d"
        drop_in_dir.mkdir()
        for name in drop_ins:
            shutil.copy(SYSTEMD / name, drop_in_dir / name)
    return unit


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit cannot be checked here")
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=120, check=False
    )


def verify_complaints(unit: Path) -> list[str]:
    done = systemd_analyze("verify", "--man=no", str(unit))
    lines = (done.stdout + done.stderr).splitlines()
    # the host's own units may draw warnings too; only ours count
    ours = [line for line in lines if str(unit.parent) in line or UNIT.name in line]
    if done.returncode != 0:
        ours.append(f"exit status {done.returncode}: {done.stderr.strip()}")
    return ours


@pytest.mark.parametrize("drop_ins", [(), *((name,) for name in DROP_INS)])
def test_unit_and_drop_ins_pass_systemd_analyze_verify(
    tmp_path: Path, drop_ins: tuple[str, ...]
) -> None:
    unit = installable_copy(tmp_path, drop_ins)
    assert verify_complaints(unit) == []

    # the same check sees a misspelt directive, so an empty list above means something
    with unit.open("a", encoding="utf-8") as out:
        out.write("\n[Service]\nProtectSytem=strict\n")
    assert any("ProtectSytem" in line for line in verify_complaints(unit))


@pytest.mark.parametrize(
    ("drop_ins", "most"),
    [((), 2.0), (("jetson.conf",), 2.5), (("raspberry-pi.conf",), 2.5)],
)
def test_unit_exposure_stays_low(tmp_path: Path, drop_ins: tuple[str, ...], most: float) -> None:
    """systemd's own score of the sandbox (0 best, 10 worst; below 2 it calls "OK")."""
    unit = installable_copy(tmp_path, drop_ins)
    done = systemd_analyze("security", "--offline=yes", "--no-pager", str(unit))
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("this systemd-analyze predates --offline (systemd 250)")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    assert float(match.group(1)) <= most


def test_unit_runs_edge_agent_serve_with_flags_it_has() -> None:
    """Runs the real CLI: ``edge-agent serve --help`` must list every flag the unit passes."""
    argv = exec_start(read_unit(UNIT))
    assert Path(argv[0]).name == "edge-agent"
    assert argv[1] == "serve"
    done = subprocess.run(
        [str(EDGE_AGENT), "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for flag in (arg.split("=")[0] for arg in argv[2:] if arg.startswith("--")):
        assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", done.stdout), flag


def test_unit_keeps_its_files_in_its_own_directories() -> None:
    unit = read_unit(UNIT)
    state = Path("/var/lib") / unit_value(unit, "StateDirectory")
    runtime = Path("/run") / unit_value(unit, "RuntimeDirectory")
    config = Path("/etc") / unit_value(unit, "ConfigurationDirectory")
    env = unit_environment(unit)
    written = [Path(value) for value in env.values() if value.startswith("/var/")]
    assert written, "the unit points no state file at its StateDirectory"
    for path in written:
        assert path.is_relative_to(state), path
    argv = exec_start(unit)
    socket_path = Path(argv[argv.index("--grpc") + 1].removeprefix("unix:"))
    assert socket_path.is_relative_to(runtime)
    assert Path(env["RIDGELINE_EDGE_CONFIG"]).is_relative_to(config)
    assert Path(unit_value(unit, "EnvironmentFile").lstrip("-")).is_relative_to(config)


def test_sysusers_creates_the_units_user_with_its_state_directory_as_home(tmp_path: Path) -> None:
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD / "ridgeline.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    unit = read_unit(UNIT)
    users = {
        fields[0]: fields
        for fields in (
            line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
        )
    }
    user = users[unit_value(unit, "User")]
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert unit_value(unit, "Group") in groups
    assert user[5] == f"/var/lib/{unit_value(unit, 'StateDirectory')}"


def env_file_assignments(path: Path) -> dict[str, str]:
    """Every assignment in an environment file, the commented-out examples included."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_service_settings_are_keys_the_edge_agent_knows(tmp_path: Path) -> None:
    """edge.toml, the variables of the unit, its drop-ins and the launch agent, and every
    example in edge.env.example, loaded together by the real ``edge-agent config show``: an
    unknown key fails there (and would stop the service with exit status 2). The drain fits
    in TimeoutStopSec= and the launch agent's ExitTimeOut."""
    unit = read_unit(UNIT, *(SYSTEMD / name for name in DROP_INS))
    plist = plistlib.loads(LAUNCH_AGENT.read_bytes())
    env = {
        **plist["EnvironmentVariables"],
        **unit_environment(unit),
        **env_file_assignments(SYSTEMD / "edge.env.example"),
    }
    assert env["RIDGELINE_EDGE_CONFIG"] == "/etc/ridgeline/edge.toml"
    env["RIDGELINE_EDGE_CONFIG"] = str(SYSTEMD / "edge.toml")
    for name, value in env.items():  # secrets the examples name, as files that exist
        if value.startswith("/etc/ridgeline/") and name != "RIDGELINE_EDGE_CONFIG":
            stand_in = tmp_path / Path(value).name
            stand_in.write_text("rl_stand-in-secret\n")
            stand_in.chmod(0o600)
            env[name] = str(stand_in)
    base = {key: value for key, value in os.environ.items() if not key.startswith("RIDGELINE_")}
    base.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run(
        [str(EDGE_AGENT), "config", "show", "--json"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    for name, value in env.items():
        if name.startswith("RIDGELINE_EDGE_") and name != "RIDGELINE_EDGE_CONFIG":
            section, key = name.removeprefix("RIDGELINE_EDGE_").lower().split("__")
            assert str(shown["settings"][section][key]) == value, name
    drain_s = shown["settings"]["daemon"]["drain_s"]
    # after drain_s the daemon takes up to 5 s to cancel the rest, then unloads
    assert seconds(unit_value(unit, "TimeoutStopSec")) >= drain_s + 10
    assert plist["ExitTimeOut"] >= drain_s + 10


# -- launchd ------------------------------------------------------------------------------------


def test_launch_agent_runs_edge_agent_serve_and_restarts_only_after_failures() -> None:
    plist = plistlib.loads(LAUNCH_AGENT.read_bytes())
    assert plist["Label"] == LAUNCH_AGENT.stem
    program, *args = plist["ProgramArguments"]
    assert Path(program).is_absolute()
    assert Path(program).name == "edge-agent"
    assert args == ["serve"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).is_absolute()  # launchd expands no ~


# -- container ----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


def dockerfile() -> list[Instruction]:
    text = (CONTAINER / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions = []
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        stage += keyword == "FROM"
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions


def copies(*, from_context: bool) -> Iterator[tuple[list[str], str, int]]:
    """(sources, destination, stage) of each COPY from the build context or from a stage."""
    for inst in dockerfile():
        if inst.keyword != "COPY":
            continue
        words = shlex.split(inst.args)
        from_stage = any(word.startswith("--from=") for word in words)
        paths = [word for word in words if not word.startswith("--")]
        if from_stage != from_context:
            yield paths[:-1], paths[-1], inst.stage


def build_args() -> dict[str, str]:
    found = {}
    for inst in dockerfile():
        if inst.keyword == "ARG" and "=" in inst.args:
            name, _, value = inst.args.partition("=")
            found[name] = shlex.split(value)[0] if value else ""
    return found


def final_stage() -> list[Instruction]:
    instructions = dockerfile()
    return [inst for inst in instructions if inst.stage == instructions[-1].stage]


def copied_to(source: str) -> str:
    """Where the Dockerfile puts a file from the build context."""
    for sources, destination, _ in copies(from_context=True):
        if source in sources:
            return destination
    raise AssertionError(f"the Dockerfile does not copy {source}")


def container_broker_toml() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((CONTAINER / "broker.toml").read_text(encoding="utf-8"))
    return config


def ignored_by_context(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for an allow-list: the last pattern matching the path or a parent
    decides; ``!`` re-includes."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerfile_copies_what_exists_and_the_context_lets_through() -> None:
    patterns = [
        line.strip()
        for line in (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [src.rstrip("/") for srcs, _, _ in copies(from_context=True) for src in srcs]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored_by_context(source, patterns), f"{source} is left out of the context"
    # and the allow-list names nothing that is not copied (it would only grow the context)
    assert {p.removeprefix("!") for p in patterns if p.startswith("!")} <= set(sources)


def test_dockerfile_copies_every_package_pyproject_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = project["tool"]["setuptools"]
    renamed = setuptools.get("package-dir", {})
    needed = {
        renamed.get(name.split(".")[0], name.split(".")[0]) for name in setuptools["packages"]
    }
    needed |= {"pyproject.toml", project["project"]["readme"]}
    sources = {src.rstrip("/") for srcs, _, _ in copies(from_context=True) for src in srcs}
    assert needed <= sources


def test_pyproject_lists_every_package_so_the_image_has_them_all() -> None:
    """The image installs the project with ``pip install .``, which takes exactly the packages
    pyproject.toml lists: a subpackage left out would be missing from the image (the broker's
    backends, cloud_broker.on_ray.app:build) although the checkout's editable install finds
    it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    listed = set(setuptools["packages"])
    renamed = setuptools.get("package-dir", {})
    found = set()
    for top in (name for name in listed if "." not in name):
        directory = ROOT / renamed.get(top, top)
        for init in directory.rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                found.add(".".join((top, *init.parent.relative_to(directory).parts)))
    assert "cloud_broker.on_ray" in found
    assert found - listed == set()


def test_dockerfile_builds_llama_cpp_with_the_portable_flags_the_install_script_uses() -> None:
    script = (ROOT / "scripts/install-llama-cpp.sh").read_text(encoding="utf-8")
    match = re.search(r'x86_64 \| amd64\)\s+LLAMA_CMAKE_ARGS="([^"]+)"', script)
    assert match
    assert build_args()["LLAMA_CMAKE_ARGS"] == match.group(1)
    assert match.group(1) in (PACKAGING / "INSTALL.md").read_text(encoding="utf-8")
    assert any(
        "install-llama-cpp.sh" in inst.args for inst in dockerfile() if inst.keyword == "RUN"
    )


def test_image_runs_the_broker_as_a_non_root_user_on_the_configured_ports() -> None:
    final = final_stage()
    by_keyword: dict[str, list[str]] = {}
    for inst in final:
        by_keyword.setdefault(inst.keyword, []).append(inst.args)
    user = by_keyword["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["cloud-broker"]
    assert json.loads(by_keyword["CMD"][-1]) == ["serve"]

    config = container_broker_toml()
    exposed = {int(port) for args in by_keyword["EXPOSE"] for port in args.split()}
    assert exposed == {
        split_host_port(config["server"]["listen"])[1],
        split_host_port(config["metrics"]["listen"])[1],
    }
    env = dict(word.split("=", 1) for args in by_keyword["ENV"] for word in shlex.split(args))
    assert env["RIDGELINE_BROKER_CONFIG"] == copied_to("packaging/container/broker.toml")
    healthcheck = json.loads(by_keyword["HEALTHCHECK"][-1].partition("CMD")[2])
    assert healthcheck[1] == copied_to("packaging/container/healthcheck.py")
    # the models broker.toml serves are the ones the image pulls
    assert set(config["models"]["serve"]) <= set(build_args()["MODELS"].split())
    assert config["models"]["store_dir"] in {dest for _, dest, _ in copies(from_context=False)}


def test_container_broker_toml_is_valid_broker_settings() -> None:
    settings = load_broker_settings(config_file=CONTAINER / "broker.toml", env={}).settings
    settings.check_transport()  # listens off loopback: needs TLS and device tokens
    assert settings.tls.enabled
    assert settings.auth.enabled
    assert settings.llama_cpp.threads > 0  # not derived from the node's cores


# -- Kubernetes ---------------------------------------------------------------------------------


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object under packaging/kubernetes by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def only(kind: str) -> dict[str, Any]:
    (found,) = [doc for (k, _), doc in manifests().items() if k == kind]
    return found


def broker_container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = only("Deployment")["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schema(version: str) -> None:
    objects = manifests()
    assert {kind for kind, _ in objects} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "Secret",
        "ConfigMap",
    }
    for (kind, name), doc in objects.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name} on Kubernetes {version}: {exc}")


def test_schema_validation_catches_a_misspelt_field() -> None:
    """The bundled schemas work offline and reject unknown fields (strict)."""
    deployment = only("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kustomization_renders_everything_but_the_example_secrets() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = set(kustomization["resources"])
    assert files == {p.name for p in KUBERNETES.glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.yaml",
    }
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the rendering is not checked")
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(done.stdout)}
    assert rendered == {key for key in manifests() if key[0] != "Secret"}


def test_ports_agree_between_deployment_service_config_and_scrape_annotations() -> None:
    config = container_broker_toml()
    ports = {port["name"]: port["containerPort"] for port in broker_container()["ports"]}
    assert ports["grpc"] == split_host_port(config["server"]["listen"])[1]
    assert ports["metrics"] == split_host_port(config["metrics"]["listen"])[1]
    service = only("Service")
    deployment = only("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert (ports[target] if isinstance(target, str) else target) == ports["grpc"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]


def test_every_probe_runs_the_health_check_the_image_installs() -> None:
    container = broker_container()
    script = copied_to("packaging/container/healthcheck.py")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["python", script], probe


def mounted_file(path: str) -> tuple[dict[str, Any], str]:
    """The Secret or ConfigMap that provides the file at ``path`` in the pod, and its key."""
    pod = only("Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in broker_container()["volumeMounts"]}
    volume_name = mounts.get(str(Path(path).parent))
    assert volume_name, f"nothing is mounted at {Path(path).parent} for {path}"
    (volume,) = [v for v in pod["volumes"] if v["name"] == volume_name]
    objects = manifests()
    if "secret" in volume:
        return objects[("Secret", volume["secret"]["secretName"])], Path(path).name
    return objects[("ConfigMap", volume["configMap"]["name"])], Path(path).name


def data_keys(obj: dict[str, Any]) -> set[str]:
    return set(obj.get("data", {})) | set(obj.get("stringData", {}))


def test_every_file_the_broker_and_probes_read_is_a_key_of_a_mounted_object() -> None:
    settings = BrokerSettings.model_validate(container_broker_toml())
    container = broker_container()
    env = {item["name"]: item.get("value") for item in container["env"]}
    command = container["readinessProbe"]["exec"]["command"]
    # mutual TLS is commented out in broker.toml; turned on, its CA must be there too
    client_ca = re.search(
        r'^# client_ca_file = "([^"]+)"$', (CONTAINER / "broker.toml").read_text(), re.M
    )
    assert client_ca
    files = [
        settings.tls.cert_file,
        settings.tls.key_file,
        client_ca.group(1),
        settings.auth.tokens_file,
        command[command.index("--ca-file") + 1],
        env["RIDGELINE_BROKER_CONFIG"],
    ]
    for path in files:
        obj, key = mounted_file(str(path))
        assert key in data_keys(obj), f"{obj['metadata']['name']} has no {key} for {path}"


def test_configmap_holds_the_containers_broker_toml() -> None:
    configmap = only("ConfigMap")
    assert configmap["data"]["broker.toml"] == (CONTAINER / "broker.toml").read_text()


def test_api_key_secrets_of_the_pod_exist_as_examples() -> None:
    for item in broker_container()["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in data_keys(manifests()[("Secret", ref["name"])])


def test_hpa_scales_the_deployment_on_cpu_it_requests() -> None:
    hpa = only("HorizontalPodAutoscaler")
    deployment = only("Deployment")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    requested = cpu_cores(broker_container()["resources"]["requests"]["cpu"])
    llama = container_broker_toml()["llama_cpp"]
    assert llama["slots"] * llama["threads"] <= requested


def test_pod_runs_locked_down_as_the_images_user() -> None:
    pod = only("Deployment")["spec"]["template"]["spec"]
    container = broker_container()
    user = next(inst.args for inst in reversed(final_stage()) if inst.keyword == "USER")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user.split(":")[0])
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_service_links_are_off_because_the_broker_refuses_their_variables() -> None:
    service = only("Service")["metadata"]["name"]
    injected = service.upper().replace("-", "_") + "_SERVICE_HOST"
    if injected.startswith(BROKER_ENV_PREFIX):
        with pytest.raises(ConfigError, match=injected):
            load_broker_settings(config_file=None, env={injected: "10.0.0.1"})
    assert only("Deployment")["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_termination_grace_covers_the_pause_and_the_streams_grace() -> None:
    pod = only("Deployment")["spec"]["template"]["spec"]
    pause = broker_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    grace_s = container_broker_toml()["server"]["grace_s"]
    assert pod["terminationGracePeriodSeconds"] >= float(pause[1]) + grace_s + 5


# -- Kubernetes: the broker on Ray (KubeRay) ----------------------------------------------------

RAY_KUBERNETES = KUBERNETES / "ray"
SERVE_CONFIG = PACKAGING / "ray/serve-config.yaml"

# The field names of KubeRay's ray.io/v1 types (ray-operator/apis/ray/v1, release 1.7.0). A
# RayService is a custom resource, so no bundled schema knows it; its pod templates are core
# PodTemplateSpecs and are validated as such below.
KUBERAY_FIELDS: dict[str, frozenset[str]] = {
    "RayService": frozenset({"apiVersion", "kind", "metadata", "spec"}),
    "RayServiceSpec": frozenset(
        {
            "rayClusterDeletionDelaySeconds",
            "serviceUnhealthySecondThreshold",
            "deploymentUnhealthySecondThreshold",
            "serveService",
            "upgradeStrategy",
            "managedBy",
            "serveConfigV2",
            "rayClusterConfig",
            "excludeHeadPodFromServeSvc",
            "suspend",
        }
    ),
    "RayClusterSpec": frozenset(
        {
            "upgradeStrategy",
            "authOptions",
            "suspend",
            "managedBy",
            "autoscalerOptions",
            "headServiceAnnotations",
            "enableInTreeAutoscaling",
            "gcsFaultToleranceOptions",
            "historyServerOptions",
            "networkPolicy",
            "tlsOptions",
            "headGroupSpec",
            "rayVersion",
            "workerGroupSpecs",
        }
    ),
    "HeadGroupSpec": frozenset(
        {
            "template",
            "headService",
            "enableIngress",
            "ingressOptions",
            "resources",
            "labels",
            "rayStartParams",
            "serviceType",
        }
    ),
    "WorkerGroupSpec": frozenset(
        {
            "suspend",
            "groupName",
            "replicas",
            "minReplicas",
            "maxReplicas",
            "idleTimeoutSeconds",
            "priority",
            "resources",
            "labels",
            "rayStartParams",
            "template",
            "scaleStrategy",
            "numOfHosts",
        }
    ),
    "AutoscalerOptions": frozenset(
        {
            "resources",
            "image",
            "imagePullPolicy",
            "securityContext",
            "idleTimeoutSeconds",
            "upscalingMode",
            "version",
            "env",
            "envFrom",
            "volumeMounts",
            "command",
            "args",
        }
    ),
}
LOCKED_DOWN = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def ray_manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object under packaging/kubernetes/ray by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(RAY_KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def ray_only(kind: str) -> dict[str, Any]:
    (found,) = [doc for (k, _), doc in ray_manifests().items() if k == kind]
    return found


@dataclass
class RayPod:
    """A pod template of the RayService's cluster, and what KubeRay makes of it."""

    node_type: str  # KubeRay's ray.io/node-type: head or worker
    group: str
    group_spec: dict[str, Any]

    @property
    def template(self) -> dict[str, Any]:
        template: dict[str, Any] = self.group_spec["template"]
        return template

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.template["spec"]
        return spec

    @property
    def ray_container(self) -> dict[str, Any]:
        """KubeRay runs Ray in the first container."""
        container: dict[str, Any] = self.spec["containers"][0]
        return container

    @property
    def start_params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.group_spec["rayStartParams"]
        return params

    @property
    def labels(self) -> dict[str, str]:
        """The pod's labels: its template's, and those KubeRay sets (templates cannot)."""
        return {
            **self.template["metadata"]["labels"],
            "ray.io/is-ray-node": "yes",
            "ray.io/cluster": "ridgeline-broker-ray-x7k2q",  # made up per cluster
            "ray.io/node-type": self.node_type,
            "ray.io/group": self.group,
        }


def ray_cluster(service: dict[str, Any] | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = (service or ray_only("RayService"))["spec"]["rayClusterConfig"]
    return cluster


def ray_pods(service: dict[str, Any] | None = None) -> list[RayPod]:
    cluster = ray_cluster(service)
    head = RayPod("head", "headgroup", cluster["headGroupSpec"])
    return [head, *(RayPod("worker", g["groupName"], g) for g in cluster["workerGroupSpecs"])]


def ray_workers() -> list[RayPod]:
    return [pod for pod in ray_pods() if pod.node_type == "worker"]


def ray_head() -> RayPod:
    return ray_pods()[0]


def ray_broker_toml_text() -> str:
    text: str = ray_only("ConfigMap")["data"]["broker.toml"]
    return text


def ray_broker_settings(directory: Path) -> tuple[Path, BrokerSettings]:
    """The ConfigMap's broker.toml as a file, and the settings the broker loads from it."""
    path = directory / "broker.toml"
    path.write_text(ray_broker_toml_text(), encoding="utf-8")
    return path, load_broker_settings(config_file=path, env={}).settings


def as_deployment(name: str, template: dict[str, Any]) -> dict[str, Any]:
    """A pod template in the smallest object that carries one, for the schema check."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": template["metadata"]["labels"]}, "template": template},
    }


def head_template_as_kuberay_runs_it() -> dict[str, Any]:
    """The head's template with the autoscaler container KubeRay adds from autoscalerOptions."""
    cluster = ray_cluster()
    template: dict[str, Any] = cluster["headGroupSpec"]["template"]
    options = cluster["autoscalerOptions"]
    autoscaler = {
        "name": "autoscaler",
        "image": template["spec"]["containers"][0]["image"],
        **{
            key: options[key]
            for key in ("resources", "securityContext", "volumeMounts", "env")
            if key in options
        },
    }
    template["spec"]["containers"].append(autoscaler)
    return template


def kuberay_unknown_fields(service: dict[str, Any]) -> list[str]:
    """Fields of a RayService (down to its groups) that KubeRay's types do not define."""
    spec = service.get("spec", {})
    cluster = spec.get("rayClusterConfig", {})
    parts: list[tuple[str, str, dict[str, Any]]] = [
        ("", "RayService", service),
        ("spec.", "RayServiceSpec", spec),
        ("spec.rayClusterConfig.", "RayClusterSpec", cluster),
        ("spec.rayClusterConfig.headGroupSpec.", "HeadGroupSpec", cluster.get("headGroupSpec", {})),
        (
            "spec.rayClusterConfig.autoscalerOptions.",
            "AutoscalerOptions",
            cluster.get("autoscalerOptions", {}),
        ),
    ]
    for index, group in enumerate(cluster.get("workerGroupSpecs", [])):
        parts.append(
            (f"spec.rayClusterConfig.workerGroupSpecs[{index}].", "WorkerGroupSpec", group)
        )
    return [
        prefix + field
        for prefix, kind, obj in parts
        for field in sorted(obj)
        if field not in KUBERAY_FIELDS[kind]
    ]


def serve_schema_round_trip(config: dict[str, Any]) -> dict[str, Any]:
    """The Serve config as Ray Serve's own schema reads it (and drops what it does not know)."""
    schema = pytest.importorskip("ray.serve.schema")
    dumped: dict[str, Any] = schema.ServeDeploySchema.model_validate(config).model_dump(
        mode="json", exclude_unset=True
    )
    return dumped


def mounted_in(pod: RayPod, path: str) -> tuple[dict[str, Any], str] | None:
    """The Secret or ConfigMap that provides the file at ``path`` in a Ray pod, and its key."""
    mounts = {m["mountPath"]: m["name"] for m in pod.ray_container.get("volumeMounts", [])}
    volume_name = mounts.get(str(Path(path).parent))
    if volume_name is None:
        return None
    (volume,) = [v for v in pod.spec["volumes"] if v["name"] == volume_name]
    objects = {**manifests(), **ray_manifests()}  # the Secrets are packaging/kubernetes's
    if "secret" in volume:
        return objects[("Secret", volume["secret"]["secretName"])], Path(path).name
    return objects[("ConfigMap", volume["configMap"]["name"])], Path(path).name


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_ray_manifests_and_pod_templates_validate_against_the_kubernetes_schema(
    version: str,
) -> None:
    """The Service and ConfigMap as they are; every pod template of the RayService (the head
    with the autoscaler container KubeRay adds, each worker group) as a Deployment's; the
    Serve Service KubeRay creates from serveService."""
    objects = ray_manifests()
    assert {kind for kind, _ in objects} == {"RayService", "Service", "ConfigMap"}
    service = ray_only("RayService")
    docs = [doc for (kind, _), doc in objects.items() if kind != "RayService"]
    docs.append(as_deployment("ray-head", head_template_as_kuberay_runs_it()))
    docs += [as_deployment(f"ray-{pod.group}", pod.template) for pod in ray_workers()]
    docs.append({"apiVersion": "v1", "kind": "Service", **service["spec"]["serveService"]})
    assert len(docs) >= 5
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on Kubernetes {version}: {exc}")


def test_rayservice_uses_only_fields_kuberay_defines() -> None:
    service = ray_only("RayService")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    assert kuberay_unknown_fields(service) == []
    assert {"serveConfigV2", "rayClusterConfig"} <= set(service["spec"])
    head = ray_cluster(service)["headGroupSpec"]
    assert {"rayStartParams", "template"} <= set(head)
    workers = ray_cluster(service)["workerGroupSpecs"]
    assert workers
    for group in workers:
        assert {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(
            group
        )
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"])
        assert group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
    for pod in ray_pods(service):
        # map[string]string in KubeRay's types: a YAML number here is refused by the CRD
        assert all(isinstance(value, str) for value in pod.start_params.values()), pod.group


def test_ray_checks_catch_misspelt_fields() -> None:
    """Each check above sees a misspelling, so passing them means something."""
    service = ray_only("RayService")
    service["spec"]["rayClusterConfg"] = service["spec"].pop("rayClusterConfig")
    assert kuberay_unknown_fields(service) == ["spec.rayClusterConfg"]
    service = ray_only("RayService")
    group = ray_cluster(service)["workerGroupSpecs"][0]
    group["minReplica"] = group.pop("minReplicas")
    assert kuberay_unknown_fields(service) == [
        "spec.rayClusterConfig.workerGroupSpecs[0].minReplica"
    ]

    template = ray_workers()[0].template
    container = template["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(as_deployment("w", template), K8S_VERSIONS[0], strict=True)

    # Ray Serve's schema ignores keys it does not know: the round trip loses them
    config = yaml.safe_load(SERVE_CONFIG.read_text(encoding="utf-8"))
    config["proxy_locaton"] = config.pop("proxy_location")
    assert serve_schema_round_trip(config) != config


def test_serve_config_passes_ray_serves_schema_and_is_the_rayservices(tmp_path: Path) -> None:
    from cloud_broker.on_ray import app as on_ray_app

    config = yaml.safe_load(SERVE_CONFIG.read_text(encoding="utf-8"))
    assert yaml.safe_load(ray_only("RayService")["spec"]["serveConfigV2"]) == config
    assert serve_schema_round_trip(config) == config  # every key known, every value as given
    assert config["proxy_location"] == "Disabled"  # the fronts are the ingress
    (application,) = config["applications"]
    _, settings = ray_broker_settings(tmp_path)
    assert application["name"] == settings.ray.app_name
    module, _, name = application["import_path"].partition(":")
    assert module == on_ray_app.__name__
    assert getattr(on_ray_app, name) is on_ray_app.build
    # Serve builds the application on any node: broker.toml is on every one
    path = application["args"]["config"]
    for pod in ray_pods():
        found = mounted_in(pod, path)
        assert found is not None, f"{pod.group}: nothing is mounted for {path}"
        obj, key = found
        assert key in data_keys(obj)
        assert obj["data"][key] == ray_broker_toml_text()
        env = {item["name"]: item.get("value") for item in pod.ray_container["env"]}
        assert env["RIDGELINE_BROKER_CONFIG"] == path  # what the readiness probe reads


def test_ray_broker_toml_is_valid_and_builds_the_serve_application(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Builds (does not deploy) the application from the ConfigMap's broker.toml, as
    ``serve deploy`` of serveConfigV2 would on the cluster; no Ray is started."""
    serve = pytest.importorskip("ray.serve")
    from cloud_broker.on_ray.app import FRONT, build, deployment_name
    from cloud_broker.server import served_names

    for key in list(os.environ):
        if key.startswith("RIDGELINE_"):
            monkeypatch.delenv(key)
    path, settings = ray_broker_settings(tmp_path)
    settings.check_transport()  # listens off loopback: needs TLS and device tokens
    assert settings.tls.enabled and settings.auth.enabled
    # the same broker as the single-process image, plus the [ray] table
    shared = tomllib.loads(ray_broker_toml_text())
    assert set(shared.pop("ray")) >= {"fronts", "models"}
    assert shared == container_broker_toml()

    application = build({"config": str(path)})
    assert isinstance(application, serve.Application)
    front = application._bound_deployment  # the front, bound to a handle of each model
    assert front.name == FRONT
    assert front.ray_actor_options["num_cpus"] == settings.ray.front_num_cpus
    handles = front.init_args[1]
    assert set(handles) == set(served_names(settings)) == set(settings.ray.models)
    for name, bound in handles.items():
        model = bound._bound_deployment
        assert model.name == deployment_name(name)
        assert model.ray_actor_options["num_cpus"] == settings.ray.model(name).num_cpus


def pods_needed(
    pod_cpus: float, pod_gpus: float, fronts: list[float], replicas: list[tuple[float, float]]
) -> float:
    """Worker pods that hold the fronts (one pod per entry: the CPUs its fronts take) and the
    replicas (CPUs, GPUs), placed first-fit largest first: a lower bound on what Ray needs.
    Infinite when a replica fits no pod."""
    free = [[pod_cpus - taken, pod_gpus] for taken in fronts]
    for cpus, gpus in sorted(replicas, reverse=True):
        if cpus > pod_cpus or gpus > pod_gpus:
            return float("inf")
        for room in free:
            if room[0] >= cpus and room[1] >= gpus:
                break
        else:
            room = [pod_cpus, pod_gpus]
            free.append(room)
        room[0] -= cpus
        room[1] -= gpus
    return len(free)


def test_pods_needed_places_fronts_and_replicas() -> None:
    assert pods_needed(4, 0, [0.5, 0.5], [(2, 0)] * 2) == 2
    assert pods_needed(4, 0, [0.5, 0.5], [(2, 0)] * 8) == 5
    assert pods_needed(4, 0, [0.5], [(2, 1)]) == float("inf")
    assert pods_needed(8, 1, [1.0], [(2, 1)] * 2) == 2


def test_ray_worker_group_holds_the_fronts_and_the_replicas_at_both_bounds(
    tmp_path: Path,
) -> None:
    """minReplicas pods hold every front (fronts_per_node to a pod) and every model's
    min_replicas; maxReplicas pods hold them at max_replicas. Nothing goes on the head."""
    from cloud_broker.server import served_names

    _, settings = ray_broker_settings(tmp_path)
    ray = settings.ray
    assert float(ray_head().start_params["num-cpus"]) == 0
    (worker,) = ray_workers()
    resources = worker.ray_container["resources"]
    pod_cpus = float(worker.start_params["num-cpus"])
    assert pod_cpus == cpu_cores(resources["requests"]["cpu"])  # Ray hands out what it has
    pod_gpus = float(
        worker.start_params.get("num-gpus", resources["limits"].get("nvidia.com/gpu", 0))
    )
    per_pod = [ray.fronts_per_node] * (ray.fronts // ray.fronts_per_node)
    per_pod += [ray.fronts % ray.fronts_per_node] if ray.fronts % ray.fronts_per_node else []
    fronts = [count * ray.front_num_cpus for count in per_pod]
    models = [ray.model(name) for name in served_names(settings)]
    fewest = [
        (m.num_cpus, m.num_gpus)
        for m in models
        for _ in range(m.min_replicas if m.min_replicas is not None else m.replicas)
    ]
    most = [(m.num_cpus, m.num_gpus) for m in models for _ in range(m.most_replicas)]
    assert pods_needed(pod_cpus, pod_gpus, fronts, fewest) <= worker.group_spec["minReplicas"]
    assert pods_needed(pod_cpus, pod_gpus, fronts, most) <= worker.group_spec["maxReplicas"]
    # a llama.cpp replica reserves the CPUs its threads use
    for name in settings.models.serve:
        assert ray.model(name).num_cpus >= settings.llama_cpp.slots * settings.llama_cpp.threads


def test_ray_ports_agree_between_pods_services_and_broker_toml(tmp_path: Path) -> None:
    _, settings = ray_broker_settings(tmp_path)
    (worker,) = ray_workers()
    ports = {port["name"]: port["containerPort"] for port in worker.ray_container["ports"]}
    assert ports["grpc"] == split_host_port(settings.server.listen)[1]
    assert ports["broker-metrics"] == split_host_port(settings.metrics.listen)[1]
    assert "metrics" not in ports  # KubeRay's name for Ray's own metrics port (8080)
    annotations = worker.template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["broker-metrics"]

    service = ray_only("Service")
    serve_service = ray_only("RayService")["spec"]["serveService"]
    assert "selector" not in serve_service["spec"]  # KubeRay sets it to the cluster in use
    assert ray_only("RayService")["spec"]["excludeHeadPodFromServeSvc"] is True
    for svc in (service, serve_service):
        (port,) = svc["spec"]["ports"]
        target = port["targetPort"]
        assert (ports[target] if isinstance(target, str) else target) == ports["grpc"]
    assert serve_service["spec"]["ports"][0]["name"].startswith("serve")  # what KubeRay looks for

    # the devices' Service reaches the workers (where the fronts run), not the head
    selector = service["spec"]["selector"]
    assert all(selects(selector, pod.labels) for pod in ray_workers())
    assert not selects(selector, ray_head().labels)
    # ...and the single-process broker can share the namespace: no selector crosses over
    single_process = only("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not selects(selector, single_process)
    for obj in (only("Service"), only("PodDisruptionBudget")):
        other = obj["spec"]["selector"]
        other = other.get("matchLabels", other)
        assert not any(selects(other, pod.labels) for pod in ray_pods())

    head = ray_head()
    head_ports = {port["name"]: port["containerPort"] for port in head.ray_container["ports"]}
    assert head_ports["gcs-server"] == int(head.start_params.get("port", "6379"))
    assert head_ports["dashboard"] == int(head.start_params.get("dashboard-port", "8265"))


def test_ray_pods_mount_what_each_part_of_the_broker_reads(tmp_path: Path) -> None:
    """Fronts (workers) read the TLS files, and the readiness probe trusts ca.crt; the
    shared-limits actor (head) reads the tokens file. Each is a key of the mounted Secret,
    and neither Secret is on the pods that do not read it."""
    _, settings = ray_broker_settings(tmp_path)
    client_ca = re.search(r'^# client_ca_file = "([^"]+)"$', ray_broker_toml_text(), re.M)
    assert client_ca  # mutual TLS is commented out; turned on, its CA must be there too
    (worker,) = ray_workers()
    command = worker.ray_container["readinessProbe"]["exec"]["command"]
    tls_files = [
        str(settings.tls.cert_file),
        str(settings.tls.key_file),
        client_ca.group(1),
        command[command.index("--ca-file") + 1],
    ]
    tokens_file = str(settings.auth.tokens_file)
    for pod, files, absent in (
        (worker, tls_files, [tokens_file]),
        (ray_head(), [tokens_file], tls_files),
    ):
        for path in files:
            found = mounted_in(pod, path)
            assert found is not None, f"{pod.group}: nothing is mounted for {path}"
            obj, key = found
            assert key in data_keys(obj), f"{obj['metadata']['name']} has no {key} for {path}"
        for path in absent:
            assert mounted_in(pod, path) is None, f"{pod.group} need not have {path}"


def test_ray_pods_run_locked_down_and_probe_with_what_the_image_has() -> None:
    user = next(inst.args for inst in reversed(final_stage()) if inst.keyword == "USER")
    healthcheck = copied_to("packaging/container/healthcheck.py")
    for pod in ray_pods():
        spec, container = pod.spec, pod.ray_container
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == int(user.split(":")[0])
        assert spec["automountServiceAccountToken"] is False
        assert container["securityContext"] == LOCKED_DOWN
        # KubeRay starts Ray only in a container that leaves command and args to it
        assert "command" not in container and "args" not in container
        # Ray writes its sessions and sockets under /tmp: a volume, the root is read-only
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
        for name in ("readinessProbe", "livenessProbe"):
            probe = container[name]
            if "httpGet" in probe:  # Ray's own health, through the dashboard agent
                agent_port = int(pod.start_params["dashboard-agent-listen-port"])
                assert probe["httpGet"] == {"path": "/api/healthz", "port": agent_port}
            else:  # the image has python and healthcheck.py, and no wget or curl
                assert probe["exec"]["command"][:2] == ["python", healthcheck], (pod.group, name)
        # every volume a container mounts is one of its pod's
        volumes = {volume["name"] for volume in spec["volumes"]}
        assert {m["name"] for m in container["volumeMounts"]} <= volumes
    # a worker is ready while its front serves: only such pods get device connections
    for pod in ray_workers():
        assert pod.ray_container["readinessProbe"]["exec"]["command"][:2] == ["python", healthcheck]

    # the autoscaler KubeRay adds to the head: locked down too, and the one holder of the
    # service account's token
    options = ray_cluster()["autoscalerOptions"]
    assert options["securityContext"] == LOCKED_DOWN
    head = ray_head()
    (token_volume,) = [v["name"] for v in head.spec["volumes"] if "projected" in v]
    token_mounts = [m for m in options["volumeMounts"] if m["name"] == token_volume]
    assert [m["mountPath"] for m in token_mounts] == [
        "/var/run/secrets/kubernetes.io/serviceaccount"
    ]
    assert {m["name"] for m in options["volumeMounts"]} <= {v["name"] for v in head.spec["volumes"]}
    for pod in ray_pods():
        assert token_volume not in {m["name"] for m in pod.ray_container["volumeMounts"]}


def test_ray_pods_keep_service_links_off_because_the_broker_refuses_their_variables() -> None:
    service = ray_only("RayService")
    names = [
        ray_only("Service")["metadata"]["name"],
        service["spec"]["serveService"]["metadata"]["name"],
        f"{service['metadata']['name']}-head-svc",  # KubeRay's head Service
    ]
    for name in names:
        injected = name.upper().replace("-", "_") + "_SERVICE_HOST"
        assert injected.startswith(BROKER_ENV_PREFIX)
        with pytest.raises(ConfigError, match=injected):
            load_broker_settings(config_file=None, env={injected: "10.0.0.1"})
    for pod in ray_pods():
        assert pod.spec["enableServiceLinks"] is False, pod.group


def test_ray_workers_stop_within_their_grace_period() -> None:
    for pod in ray_workers():
        command = pod.ray_container["lifecycle"]["preStop"]["exec"]["command"]
        script = command[-1]
        pause = re.search(r"\bsleep (\d+)", script)
        stop = re.search(r"\bray stop --grace-period (\d+)", script)
        assert pause and stop, script
        needed = int(pause.group(1)) + int(stop.group(1)) + 5
        assert pod.spec["terminationGracePeriodSeconds"] >= needed


def test_ray_pods_run_the_image_built_with_the_ray_extra() -> None:
    """rayVersion is the ray the project pins (and this checkout runs); the image is the one
    packaging/README.md builds with the ray extra, which pyproject.toml defines."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    (pin,) = [re.fullmatch(r"ray\[[\w,]+\]==(\S+)", dep) for dep in extras["ray"]]
    assert pin
    assert ray_cluster()["rayVersion"] == pin.group(1)
    ray = pytest.importorskip("ray")
    assert ray.__version__ == pin.group(1)

    readme = (PACKAGING / "README.md").read_text(encoding="utf-8")
    built = re.search(r"--build-arg EXTRAS=(\S+) -t (\S+) \.", readme)
    assert built, "packaging/README.md does not build the image for Ray"
    assert "ray" in built.group(1).split(",")
    assert set(built.group(1).split(",")) <= set(extras)
    images = {container["image"] for pod in ray_pods() for container in pod.spec["containers"]}
    assert images == {built.group(2)}
    assert built.group(2) != broker_container()["image"]  # the two images are tagged apart
    # the build argument reaches pip (its default keeps the single-process image as it was)
    assert build_args()["EXTRAS"] == "broker"
    assert any(
        "pip install" in inst.args and "${EXTRAS}" in inst.args
        for inst in dockerfile()
        if inst.keyword == "RUN"
    )
    models = tomllib.loads(ray_broker_toml_text())["models"]
    assert set(models["serve"]) <= set(build_args()["MODELS"].split())


def test_ray_kustomization_renders_with_the_image_an_overlay_picks(tmp_path: Path) -> None:
    kustomization = yaml.safe_load((RAY_KUBERNETES / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in RAY_KUBERNETES.glob("*.yaml")} - {
        "kustomization.yaml"
    }
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the rendering is not checked")
    done = subprocess.run(
        ["kubectl", "kustomize", str(RAY_KUBERNETES)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(done.stdout)}
    assert rendered == set(ray_manifests())

    # an overlay's images: entry reaches the containers inside the custom resource too
    shutil.copytree(RAY_KUBERNETES, tmp_path / "base")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay/kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../base"],
                "images": [
                    {"name": "ridgeline-broker", "newName": "registry.test/rb", "newTag": "9-ray"}
                ],
            }
        )
    )
    done = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path / "overlay")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (service,) = [d for d in yaml.safe_load_all(done.stdout) if d["kind"] == "RayService"]
    images = {c["image"] for pod in ray_pods(service) for c in pod.spec["containers"]}
    assert images == {"registry.test/rb:9-ray"}


# -- the container health check, against a real broker ------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("probe-pki")
    ca = make_ca(directory, "Probe CA")
    return Pki(
        ca,
        issue(directory, ca, "broker", server=True),  # server use only, for 127.0.0.1
        issue(directory, ca, "device", server=False),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def broker_config(root: Path, pki: Pki, *, port: int, mutual: bool) -> Path:
    """A production broker that fronts one upstream it is never asked to call."""
    config = root / "broker.toml"
    client_ca = f'client_ca_file = "{pki.ca.cert_file}"' if mutual else ""
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
grace_s = 1
[tls]
cert_file = "{pki.server.cert_file}"
key_file = "{pki.server.key_file}"
{client_ca}
[auth]
tokens_file = "{root / "tokens.json"}"
[metrics]
listen = ""
[models]
serve = []
default = "upstream"
[[openai]]
name = "upstream"
base_url = "http://127.0.0.1:9/v1"
api_key = "unused"
""",
        encoding="utf-8",
    )
    return config


def probe_env(root: Path, config: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RIDGELINE_")}
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        env.pop(key, None)
    env.update(HOME=str(root), XDG_CONFIG_HOME=str(root / "config"))
    env["RIDGELINE_BROKER_CONFIG"] = str(config)
    return env


def run_probe(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CONTAINER / "healthcheck.py"), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


StartBroker = Callable[..., tuple[BrokerProcess, dict[str, str]]]


@pytest.fixture
def start_broker(tmp_path: Path, pki: Pki) -> Iterator[StartBroker]:
    started: list[BrokerProcess] = []

    def start(*, mutual: bool) -> tuple[BrokerProcess, dict[str, str]]:
        config = broker_config(tmp_path, pki, port=free_port(), mutual=mutual)
        env = probe_env(tmp_path, config)
        started.append(BrokerProcess(["serve"], env, tmp_path=tmp_path))
        return started[-1], env

    yield start
    for process in started:
        process.kill()


def test_health_check_reports_a_tls_broker_serving_then_stopped(
    start_broker: StartBroker, pki: Pki
) -> None:
    broker, env = start_broker(mutual=False)
    done = run_probe(env, "--ca-file", pki.ca.cert_file)
    assert done.returncode == 0, done.stderr
    assert "ridgeline.v1.Broker" in done.stdout and "SERVING" in done.stdout

    # without --ca-file it trusts the certificate file itself: not enough for a CA-issued leaf
    done = run_probe(env)
    assert done.returncode == 1
    assert "not trusted" in done.stderr

    assert broker.stop() == 0
    done = run_probe(env, "--ca-file", pki.ca.cert_file)
    assert done.returncode == 1
    assert "unhealthy" in done.stderr


def test_health_check_presents_a_client_certificate_under_mutual_tls(
    start_broker: StartBroker, pki: Pki
) -> None:
    _, env = start_broker(mutual=True)
    client = ("--cert-file", pki.client.cert_file, "--key-file", pki.client.key_file)
    done = run_probe(env, "--ca-file", pki.ca.cert_file, *client)
    assert done.returncode == 0, done.stderr

    # by default it presents the broker's own certificate, which is for server use only here
    done = run_probe(env, "--ca-file", pki.ca.cert_file)
    assert done.returncode == 1


def test_health_check_exits_2_on_settings_it_cannot_probe(tmp_path: Path, pki: Pki) -> None:
    config = broker_config(tmp_path, pki, port=0, mutual=False)
    done = run_probe(probe_env(tmp_path, config))
    assert done.returncode == 2
    assert "port 0" in done.stderr


# -- documentation ------------------------------------------------------------------------------


def test_packaging_readme_lists_every_file() -> None:
    readme = (PACKAGING / "README.md").read_text(encoding="utf-8")
    for path in PACKAGING.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "README.md":
            assert path.relative_to(PACKAGING).as_posix() in readme, path


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a document's headings: lower case, punctuation dropped, spaces
    to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_in_packaging_docs_resolve() -> None:
    for doc in PACKAGING.glob("*.md"):
        text = doc.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)", text):
            if "://" in target or not (target or anchor):
                continue
            path = doc.parent / target if target else doc
            assert path.exists(), f"{doc.name}: {target}"
            if anchor and path.suffix == ".md":
                assert anchor in heading_anchors(path.read_text(encoding="utf-8")), (
                    f"{doc.name}: {target}#{anchor}"
                )


def test_board_guides_use_build_flags_install_md_documents() -> None:
    install = (PACKAGING / "INSTALL.md").read_text(encoding="utf-8")
    for guide in ("jetson.md", "raspberry-pi.md"):
        text = (PACKAGING / guide).read_text(encoding="utf-8")
        flags = re.findall(r'(?:LLAMA_)?CMAKE_ARGS="([^"]+)"', text)
        assert flags, guide
        for value in flags:
            assert value in install, f"{guide}: {value}"
