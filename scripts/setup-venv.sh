#!/usr/bin/env sh
# Install the project into a venv with the given extras, compiling llama-cpp-python (the
# slow part: minutes of C++) while the rest is installed.
#
#   scripts/setup-venv.sh .venv/bin/python edge,broker,onnx,plot,dev
#
# The compile needs both cores, so the rest is installed with uv when it can be had from
# the package index: measured here, pip spends about 60 s of CPU on these packages and
# uv about 15 s (both compile the bytecode), which leaves the cores to the compiler.
# RIDGELINE_INSTALLER=pip (or no uv on the index) installs them with pip instead.
set -eu

python=${1:?usage: $0 VENV_PYTHON EXTRAS}
extras=${2:?usage: $0 VENV_PYTHON EXTRAS}
venv=$(dirname "$(dirname "$python")")

scripts/install-llama-cpp.sh --build-only "$python" > "$venv/llama-build.log" 2>&1 &
build=$!
"$python" -c 'import tomllib' 2>/dev/null || "$python" -m pip install --quiet tomli
if [ "${RIDGELINE_INSTALLER:-uv}" = uv ] && "$python" -m pip install --quiet uv >/dev/null 2>&1; then
    install() { "$venv/bin/uv" pip install --quiet --python "$python" --compile-bytecode "$@"; }
else
    install() { "$python" -m pip install --quiet "$@"; }
fi
"$python" scripts/requirements.py "$extras" > "$venv/requirements.txt"
install -r "$venv/requirements.txt" || { kill "$build"; exit 1; }
if ! wait "$build"; then
    cat "$venv/llama-build.log" >&2
    exit 1
fi
cat "$venv/llama-build.log"
scripts/install-llama-cpp.sh "$python"  # the built wheel, and its dependencies
install -e ".[$extras]"                 # the project (what is left: its extras)
