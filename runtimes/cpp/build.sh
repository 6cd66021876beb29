#!/usr/bin/env bash
# Configure and build the C++ runtime (library, edgecompress-run, tests) with CMake.
#
# What it needs and where it comes from, in order:
#   ONNX Runtime  ONNXRUNTIME_ROOT (include/ + lib/, a release tarball or JetPack), else the headers
#                 of Debian's libonnxruntime-dev (.deb, unpacked here, nothing installed) with the
#                 shared library of the Python onnxruntime package (.venv, or pip download).
#   nlohmann-json, stb   the system's headers where installed, else Debian's .debs, unpacked here.
#   OpenSSL libcrypto    optional (sha256); a built-in implementation otherwise.
#   TensorRT + CUDA      optional (--backend tensorrt): JetPack's, or TENSORRT_ROOT (include/ + lib/).
# Nothing is installed system-wide. Usage: bash runtimes/cpp/build.sh [--debug] [--clean]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BUILD="$HERE/build"
DEPS="$BUILD/_deps"
TYPE=Release
for arg in "$@"; do
  case "$arg" in
    --debug) TYPE=Debug ;;
    --clean) rm -rf "$BUILD" ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown option $arg (--debug, --clean)" >&2; exit 2 ;;
  esac
done
mkdir -p "$DEPS"

say() { echo "[build.sh] $*"; }

# -- Debian packages, downloaded and unpacked into build/_deps (no root, nothing installed) ----
debs_needed=()
[ -f /usr/include/nlohmann/json.hpp ] || debs_needed+=("nlohmann-json3-dev/bookworm")
[ -f /usr/include/stb/stb_image.h ] || debs_needed+=("libstb-dev/bookworm")
if [ -z "${ONNXRUNTIME_ROOT:-}" ]; then debs_needed+=("libonnxruntime-dev/trixie"); fi
if [ ${#debs_needed[@]} -gt 0 ] && [ ! -f "$DEPS/debs.done" ]; then
  command -v apt-get >/dev/null || { echo "build.sh: apt-get is needed to fetch ${debs_needed[*]} (or set ONNXRUNTIME_ROOT and install nlohmann-json and stb)" >&2; exit 2; }
  say "fetching ${debs_needed[*]} from Debian"
  APT="$DEPS/apt"
  mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$DEPS/debs" "$DEPS/root"
  cat > "$APT/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
SRC
  OPTS=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State=$APT" -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache"
        -o Debug::NoLocking=1 -o APT::Sandbox::User=root -qq)
  apt-get "${OPTS[@]}" update
  (cd "$DEPS/debs" && apt-get "${OPTS[@]}" download "${debs_needed[@]}")
  for deb in "$DEPS"/debs/*.deb; do dpkg -x "$deb" "$DEPS/root"; done
  rm -rf "$APT"
  touch "$DEPS/debs.done"
fi

# -- ONNX Runtime: headers + the shared library as one root folder --------------------------
if [ -z "${ONNXRUNTIME_ROOT:-}" ]; then
  ORT="$DEPS/onnxruntime"
  mkdir -p "$ORT/lib"
  ln -sfn "$DEPS/root/usr/include/onnxruntime" "$ORT/include"
  PY="${PYTHON:-}"
  [ -z "$PY" ] && [ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
  [ -z "$PY" ] && PY=python3
  CAPI="$("$PY" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))' 2>/dev/null || true)"
  if [ -z "$CAPI" ] || ! ls "$CAPI"/libonnxruntime.so.* >/dev/null 2>&1; then
    if ! ls "$DEPS"/wheel/onnxruntime/capi/libonnxruntime.so.* >/dev/null 2>&1; then
      say "no onnxruntime Python package: downloading its wheel for the shared library"
      rm -rf "$DEPS/wheel" && mkdir -p "$DEPS/wheel"
      "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$DEPS/wheel" "onnxruntime>=1.20"
      (cd "$DEPS/wheel" && "$PY" -m zipfile -e onnxruntime-*.whl .)
    fi
    CAPI="$DEPS/wheel/onnxruntime/capi"
  fi
  LIB="$(ls "$CAPI"/libonnxruntime.so.* | head -1)"
  ln -sfn "$LIB" "$ORT/lib/libonnxruntime.so"
  ln -sfn "$LIB" "$ORT/lib/libonnxruntime.so.1"
  ONNXRUNTIME_ROOT="$ORT"
fi

say "configuring ($TYPE; ONNX Runtime from $ONNXRUNTIME_ROOT)"
cmake -S "$HERE" -B "$BUILD" -DCMAKE_BUILD_TYPE="$TYPE" -DONNXRUNTIME_ROOT="$ONNXRUNTIME_ROOT" \
  -DEDGECOMPRESS_DEPS="$DEPS/root" -DEDGECOMPRESS_BUILD_TESTS=ON ${TENSORRT_ROOT:+-DTENSORRT_ROOT="$TENSORRT_ROOT"} \
  > "$BUILD/configure.log" \
  || { cat "$BUILD/configure.log" >&2; exit 1; }
JOBS="$(nproc 2>/dev/null || echo 2)"
say "building with $JOBS jobs"
cmake --build "$BUILD" -j "$JOBS"
say "done: $BUILD/edgecompress-run"
