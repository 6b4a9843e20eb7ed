#!/usr/bin/env sh
# Install the project into a venv with the given extras, compiling llama-cpp-python (the
# slow part: minutes of C++) while pip installs everything else.
#
#   scripts/setup-venv.sh .venv/bin/python edge,broker,onnx,plot,dev
set -eu

python=${1:?usage: $0 VENV_PYTHON EXTRAS}
extras=${2:?usage: $0 VENV_PYTHON EXTRAS}
venv=$(dirname "$(dirname "$python")")

scripts/install-llama-cpp.sh --build-only "$python" > "$venv/llama-build.log" 2>&1 &
build=$!
"$python" -c 'import tomllib' 2>/dev/null || "$python" -m pip install --quiet tomli
"$python" scripts/requirements.py "$extras" > "$venv/requirements.txt"
"$python" -m pip install --quiet -r "$venv/requirements.txt" || { kill "$build"; exit 1; }
if ! wait "$build"; then
    cat "$venv/llama-build.log" >&2
    exit 1
fi
cat "$venv/llama-build.log"
scripts/install-llama-cpp.sh "$python"             # the built wheel, and its dependencies
"$python" -m pip install --quiet -e ".[$extras]"   # the project (what is left: its extras)
