#!/usr/bin/env sh
# Build llama-cpp-python once with known-good CMake flags and install it into a venv.
#
#   scripts/install-llama-cpp.sh .venv/bin/python            # build once, install
#   scripts/install-llama-cpp.sh --build-only .venv/bin/python   # only build the wheel
#
# --build-only leaves the venv alone, so `make` can install the other dependencies while
# the C++ compiles (scripts/setup-venv.sh).
#
# Why not plain `pip install llama-cpp-python`: a native x86-64 build crashes on
# CPUs with AMX (ggml_backend_amx_mul_mat), and pip caches built wheels without
# regard to CMAKE_ARGS, so a crashing wheel can come back from the cache. We build
# with --no-cache-dir into .cache/llama-wheels/<hash of version, flags, python>/
# and install that wheel; a rerun with the same flags reuses it (no rebuild).
#
# LLAMA_CMAKE_ARGS overrides the flags (e.g. "-DGGML_CUDA=on" for NVIDIA GPUs,
# see packaging/INSTALL.md); LLAMA_CPP_VERSION overrides the version.
set -eu

build_only=false
if [ "${1:-}" = "--build-only" ]; then
    build_only=true
    shift
fi
python=${1:?usage: $0 [--build-only] VENV_PYTHON}
version=${LLAMA_CPP_VERSION:-0.3.36}
if [ -z "${LLAMA_CMAKE_ARGS+set}" ]; then
    case "$(uname -m)" in
        x86_64 | amd64)
            LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" ;;
        *)  # aarch64 (Jetson, Raspberry Pi), arm64 macOS (Metal): llama.cpp's defaults
            LLAMA_CMAKE_ARGS="" ;;
    esac
fi
# Ridgeline never uses the multimodal library (llava/mtmd): not building it saves minutes.
case "$LLAMA_CMAKE_ARGS" in
    *LLAVA_BUILD*) ;;
    *) LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS:+$LLAMA_CMAKE_ARGS }-DLLAVA_BUILD=OFF" ;;
esac

# llama-cpp-python forces llama.cpp's "common" library on, which only llava/mtmd uses: the
# Python package loads libllama and libggml alone. Without llava we build from the sdist
# with that switch turned off, which halves the compile (263 s -> 125 s on 2 cores).
without_common=false
case "$LLAMA_CMAKE_ARGS" in
    *LLAVA_BUILD=OFF*) without_common=true ;;
esac

key=$("$python" -c 'import hashlib, sys; print(hashlib.sha256("|".join(sys.argv[1:] + [sys.version]).encode()).hexdigest()[:16])' "$version" "$LLAMA_CMAKE_ARGS" "without-common=$without_common")
venv=$(dirname "$(dirname "$python")")
marker="$venv/.llama-cpp-build"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$key" ]; then
    exit 0  # this venv already has exactly this build
fi

wheels=".cache/llama-wheels/$key"
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $version (takes 2 to 5 minutes on 2 cores)"
    echo "  CMAKE_ARGS=$LLAMA_CMAKE_ARGS"
    rm -rf "$wheels.partial" "$wheels.src"
    source="llama-cpp-python==$version"
    if $without_common; then
        "$python" -m pip download --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
            --dest "$wheels.src" "llama-cpp-python==$version"
        tar -xzf "$wheels.src"/llama_cpp_python-*.tar.gz -C "$wheels.src"
        source=$(echo "$wheels.src"/llama_cpp_python-*/)
        if grep -q 'set(LLAMA_BUILD_COMMON ON CACHE' "$source/CMakeLists.txt"; then
            sed -i 's/set(LLAMA_BUILD_COMMON ON CACHE/set(LLAMA_BUILD_COMMON OFF CACHE/' \
                "$source/CMakeLists.txt"
            echo "  without llama.cpp's common library (only llava uses it)"
        else
            echo "  (this version does not force the common library: building as released)"
        fi
    fi
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$python" -m pip wheel --no-cache-dir --no-deps \
        --no-binary llama-cpp-python --wheel-dir "$wheels.partial" "$source"
    mv "$wheels.partial" "$wheels"
    rm -rf "$wheels.src"
fi
if $build_only; then
    exit 0
fi
"$python" -m pip install --quiet --no-cache-dir --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
"$python" -m pip install --quiet "llama-cpp-python==$version"  # its dependencies, from the index
echo "$key" > "$marker"
