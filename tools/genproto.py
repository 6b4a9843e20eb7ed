"""Regenerate the protocol package ``ridgeline`` from ``protos/``.

Usage::

    python tools/genproto.py           # rewrite the committed files
    python tools/genproto.py --check   # exit 1 and list stale files

The generated modules (messages, gRPC stubs and their ``.pyi`` type stubs) are
committed so that installing Ridgeline never needs protoc. The versions of
grpcio-tools and mypy-protobuf are pinned in the ``dev`` extra because their
output is compared byte for byte by ``tests/test_protocol.py``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "ridgeline"

INIT_TEXT = '"""Generated from protos/ by tools/genproto.py. Do not edit."""\n'


def generate(out_dir: Path) -> list[Path]:
    """Write the generated package under ``out_dir`` and return its files."""
    from grpc_tools import protoc  # dev extra; imported here so --help works without it

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT}")
    include = Path(protoc.__file__).parent / "_proto"
    plugin = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if plugin is None:
        raise SystemExit("protoc-gen-mypy_grpc not found: install ridgeline[dev]")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy_grpc={plugin}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package_dirs = {out_dir / PACKAGE}
    for proto in protos:
        rel = proto.relative_to(PROTO_ROOT).parent
        for depth in range(len(rel.parts)):
            package_dirs.add(out_dir.joinpath(*rel.parts[: depth + 1]))
    for directory in package_dirs:
        (directory / "__init__.py").write_text(INIT_TEXT)
        (directory / "py.typed").write_text("")
    return sorted(p for p in (out_dir / PACKAGE).rglob("*") if p.is_file())


def stale_files(committed_root: Path = ROOT) -> list[str]:
    """Names of generated files that differ from what is committed."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        fresh = {p.relative_to(fresh_root) for p in generate(fresh_root)}
        committed = {
            p.relative_to(committed_root)
            for p in (committed_root / PACKAGE).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        stale = sorted(str(p) for p in fresh ^ committed)
        stale += sorted(
            str(p)
            for p in fresh & committed
            if not filecmp.cmp(fresh_root / p, committed_root / p, shallow=False)
        )
        return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files, change nothing")
    options = parser.parse_args()
    if options.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        if stale:
            print("run: python tools/genproto.py", file=sys.stderr)
        return 1 if stale else 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        files = generate(fresh)  # a protoc failure leaves the committed package alone
        target = ROOT / PACKAGE
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(fresh / PACKAGE, target)
    for path in files:
        print(path.relative_to(fresh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
