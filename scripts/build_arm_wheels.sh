#!/usr/bin/env bash
# Cross-builds the cp311 ARM wheels on an x86-64 Debian 12 machine (as root: it apt-installs what is missing):
#   dist/lenet-<version>-cp311-cp311-linux_aarch64.whl   (NEON always)
#   dist/lenet-<version>-cp311-cp311-linux_armv7l.whl    (NEON when the CPU has it, else the reference kernels)
# Usage: scripts/build_arm_wheels.sh [aarch64] [armv7]   (default: both)
# Needs a host Python 3.11 (the wheel's cp311 tag comes from it). Downloads are cached in build/arm/cache/, build
# trees are build/arm/build-<target>/: a rerun only recompiles what changed. Then scripts/test_arm.sh runs them.
# LENET_SRC=DIR builds the project in DIR instead of this checkout (e.g. an export of one commit).
set -euo pipefail
. "$(dirname "$0")/arm_env.sh"
targets=("$@")
((${#targets[@]})) || targets=("${ARM_TARGETS[@]}")

if [ "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != 3.11 ]; then
  echo "build_arm_wheels.sh: the host python3 must be 3.11, like the targets' CPython" >&2
  exit 1
fi
arm_apt_install

arm_host_tools
venv=$ARM_DIR/venv

mkdir -p "$ARM_ROOT/dist"
for t in "${targets[@]}"; do
  arm_prepare_target "$t"
  # The target interpreter's own extension suffix and platform (e.g. .cpython-311-aarch64-linux-gnu.so,
  # linux-aarch64): scikit-build-core and pybind11 take them from these variables when cross-compiling.
  read -r ext_suffix host_platform < <(arm_python "$t" -c \
    'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"), sysconfig.get_platform())')
  echo "== wheel for $t ($host_platform, $ext_suffix)"
  rm -f "$ARM_ROOT"/dist/lenet-*-"$plat".whl
  src=$(cd "${LENET_SRC:-$ARM_ROOT}" && pwd)
  build=$ARM_DIR/build-$t
  # A build tree configured for another source folder cannot be reused.
  grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$build/CMakeCache.txt" 2>/dev/null || rm -rf "$build"
  start=$SECONDS
  PATH=$venv/bin:$PATH _PYTHON_HOST_PLATFORM=$host_platform SETUPTOOLS_EXT_SUFFIX=$ext_suffix \
    "$venv/bin/python" -m pip wheel --quiet --no-build-isolation --no-deps -w "$ARM_ROOT/dist" "$src" \
    -C cmake.toolchain-file="$toolchain" \
    -C cmake.define.PYBIND11_USE_CROSSCOMPILING=ON \
    -C cmake.define.Python_INCLUDE_DIR="$sysroot/usr/include/python3.11" \
    -C build-dir="$build"
  wheel=$(ls "$ARM_ROOT"/dist/lenet-*-cp311-cp311-"$plat".whl)
  # The tag in the file name and in the WHEEL metadata, and the extension inside, must all be the target's.
  "$venv/bin/python" - "$wheel" "$plat" "$ext_suffix" <<'EOF'
import sys, zipfile
wheel, plat, ext_suffix = sys.argv[1:]
z = zipfile.ZipFile(wheel)
meta = next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL"))
tags = [l.split(": ", 1)[1] for l in z.read(meta).decode().splitlines() if l.startswith("Tag: ")]
assert tags == [f"cp311-cp311-{plat}"], tags
assert f"lenet/_core{ext_suffix}" in z.namelist(), z.namelist()
print(f"   tag {tags[0]}, lenet/_core{ext_suffix}")
EOF
  echo "   $(basename "$wheel"): $(du -k "$wheel" | cut -f1) KB, $((SECONDS - start)) s"
done
