# Shared by build_arm_wheels.sh and test_arm.sh (sourced, not run): the two ARM targets, and what an x86-64
# Debian machine needs to build for them and to run them under qemu user-mode emulation.
# Everything downloaded or built lives under build/arm/ (git-ignored); cache/ is kept between runs.

ARM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARM_DIR=$ARM_ROOT/build/arm
ARM_CACHE=$ARM_DIR/cache
ARM_TARGETS=(aarch64 armv7)
export PIP_CACHE_DIR=$ARM_CACHE/pip PIP_DISABLE_PIP_VERSION_CHECK=1

# The target's CPython and its shared libraries, unpacked (dpkg -x) into a sysroot, never installed.
ARM_SYSROOT_DEBS=(libc6 libgcc-s1 libstdc++6 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
                  libpython3.11-dev libexpat1 zlib1g libffi8 libssl3 libbz2-1.0 liblzma5 libuuid1)

# Sets, for target $1: deb_arch triplet qemu qemu_cpu plat (wheel platform tag) pip_plat (for its PyPI wheels),
# qemu_cpu_no_neon (a CPU of the target without NEON, if it can have none), toolchain sysroot site.
arm_target() {
  qemu_cpu_no_neon=
  case $1 in
    aarch64) deb_arch=arm64 triplet=aarch64-linux-gnu qemu=qemu-aarch64 qemu_cpu=cortex-a72 plat=linux_aarch64
             pip_plat=manylinux_2_28_aarch64 ;;  # numpy: manylinux2014 offers only an old one
    armv7) deb_arch=armhf triplet=arm-linux-gnueabihf qemu=qemu-arm qemu_cpu=cortex-a7 plat=linux_armv7l
           pip_plat=linux_armv7l qemu_cpu_no_neon=cortex-r5f ;;  # VFPv3-D16, the armhf baseline
    *) echo "unknown ARM target '$1' (aarch64 or armv7)" >&2; return 1 ;;
  esac
  toolchain=$ARM_ROOT/cmake/toolchains/$triplet.cmake
  sysroot=$ARM_CACHE/sysroot-$1
  site=$ARM_CACHE/site-$1  # numpy (aarch64) and pytest for the target
}

# Runs a program of the target under qemu with its sysroot: arm_run TARGET PROGRAM ARGS... (ARM_QEMU_CPU=...
# overrides the CPU; ARM_TIMEOUT=SECONDS ends a run that takes longer, with exit status 124, so that a hang fails
# instead of stalling)
arm_run() {
  arm_target "$1" || return
  shift
  QEMU_CPU=${ARM_QEMU_CPU:-$qemu_cpu} ${ARM_TIMEOUT:+timeout --kill-after=30 "$ARM_TIMEOUT"} "$qemu" -L "$sysroot" "$@"
}

# The target's python3.11 under qemu: arm_python TARGET ARGS...
arm_python() {
  arm_target "$1" || return
  arm_run "$1" "$sysroot/usr/bin/python3.11" "${@:2}"
}

arm_apt_install() {  # the cross compilers and qemu-user, when missing
  local missing=()
  command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
  command -v arm-linux-gnueabihf-g++ >/dev/null || missing+=(g++-arm-linux-gnueabihf)
  command -v qemu-aarch64 >/dev/null && command -v qemu-arm >/dev/null || missing+=(qemu-user)
  if ((${#missing[@]})); then
    arm_apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
}

ARM_APT_UPDATED=
arm_apt_update() {  # once per run; one foreign-architecture list of the security archive may fail: tolerated
  [ -n "$ARM_APT_UPDATED" ] && return
  dpkg --add-architecture arm64
  dpkg --add-architecture armhf
  apt-get update || echo "apt-get update reported an error (tolerated if the packages below resolve)" >&2
  ARM_APT_UPDATED=1
}

# The target's sysroot (CPython + libraries; armv7 also Debian's numpy) and its site folder (numpy, pytest).
arm_prepare_target() {
  arm_target "$1" || return
  local debs=("${ARM_SYSROOT_DEBS[@]}")
  # armv7: PyPI has no numpy wheels for armv7l; Debian's python3-numpy runs on the sysroot's CPython.
  [ "$1" = armv7 ] && debs+=(python3-numpy libblas3 liblapack3 libgfortran5)
  local stamp="$sysroot/.lenet-sysroot" want="${debs[*]}"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== sysroot for $1 ($deb_arch): ${#debs[@]} Debian packages"
    local dl=$ARM_CACHE/debs-$1
    mkdir -p "$dl"
    local names=("${debs[@]/%/:$deb_arch}")
    if ! (cd "$dl" && apt-get download "${names[@]}"); then
      arm_apt_update
      (cd "$dl" && apt-get download "${names[@]}")
    fi
    rm -rf "$sysroot"
    mkdir -p "$sysroot"
    for deb in "$dl"/*.deb; do dpkg -x "$deb" "$sysroot"; done
    # Debian's pyconfig.h only includes <triplet>/python3.11/pyconfig.h: put the real one in its place.
    cp "$sysroot/usr/include/$triplet/python3.11/pyconfig.h" "$sysroot/usr/include/python3.11/pyconfig.h"
    # update-alternatives (not run by dpkg -x) makes these links.
    if [ "$1" = armv7 ]; then
      for lib in blas lapack; do ln -sf "$lib/lib$lib.so.3" "$sysroot/usr/lib/$triplet/lib$lib.so.3"; done
    fi
    echo "$want" > "$stamp"
  fi
  if [ ! -f "$site/.lenet-site" ]; then
    echo "== numpy and pytest for $1"
    rm -rf "$site"
    local pkgs=(pytest)
    [ "$1" = aarch64 ] && pkgs+=(numpy)
    python3 -m pip install --quiet --target "$site" --platform "$pip_plat" --python-version 3.11 \
      --implementation cp --abi cp311 --only-binary=:all: "${pkgs[@]}"
    touch "$site/.lenet-site"
  fi
}

# The host's build tools in build/arm/venv (scikit-build-core, pybind11, cmake, ninja), installed once. The wheels
# are built without build isolation, which would fetch the target's cmake wheel.
arm_host_tools() {
  local venv=$ARM_DIR/venv
  if [ ! -f "$venv/.lenet-tools" ]; then
    echo "== host build tools in $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "scikit-build-core>=0.12" "pybind11>=2.13" cmake ninja
    touch "$venv/.lenet-tools"
  fi
}
