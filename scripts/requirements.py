"""Print the requirements of the project's extras, without llama-cpp-python.

    python scripts/requirements.py edge,broker,onnx,plot,dev

`scripts/setup-venv.sh` installs these while llama-cpp-python compiles (that build is
scripts/install-llama-cpp.sh's, with known-good flags); llama-cpp-python and its own
extras come after it. Extras that name the project (`ridgeline[...]`) are expanded.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the venv's pip installs tomli first
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    found: list[str] = list(project["dependencies"])
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional[extra]:
            own = re.fullmatch(r"ridgeline\[([^\]]+)\]", requirement.replace(" ", ""))
            if own:
                pending.extend(own.group(1).split(","))
            else:
                found.append(requirement)
    kept = [r for r in found if not re.match(r"llama[-_]cpp[-_]python\b", r, re.IGNORECASE)]
    return sorted(set(kept), key=found.index)


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1].split(","))))
