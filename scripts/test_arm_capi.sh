#!/usr/bin/env bash
# The core library and its C API without Python, cross-built for each ARM target and run under qemu-user:
#   build/arm/capi-<target>/liblenet.so and mnist_demo (plain CMake with the target's toolchain file)
# The demo loads a LeNet-5 model file trained on this x86 machine (its MNIST accuracy must match the native run's),
# trains a fresh LeNet-5 on 1,920 MNIST images for 3 epochs (batch 64, SGD) on the emulated CPU, checks its
# accuracy on 2,000 test images, saves it, loads it back and compares the predictions.
# Prints the size of the stripped library per target (x86-64 included, for comparison).
# Usage: LENET_MNIST_DIR=DIR scripts/test_arm_capi.sh MODEL.lenet [aarch64] [armv7]
set -euo pipefail
. "$(dirname "$0")/arm_env.sh"
model=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
targets=("$@")
((${#targets[@]})) || targets=("${ARM_TARGETS[@]}")
[ -d "${LENET_MNIST_DIR:-}" ] || { echo "test_arm_capi.sh: set LENET_MNIST_DIR" >&2; exit 1; }
arm_apt_install

raw=$ARM_DIR/mnist-raw  # the demo reads uncompressed IDX files
mkdir -p "$raw"
for f in "$LENET_MNIST_DIR"/*-ubyte.gz; do
  [ -f "$raw/$(basename "$f" .gz)" ] || gunzip -c "$f" >"$raw/$(basename "$f" .gz)"
done
demo_args=(--model "$model" --train 1920 --test 2000 --epochs 3 --min-accuracy 0.7)
file_accuracy() { sed -n 's/^.*accuracy on 2000 test images \([0-9.]*\)$/\1/p' | head -n 1; }

arm_host_tools
tools=$ARM_DIR/venv/bin  # cmake and ninja

native=$ARM_DIR/capi-x86_64
"$tools/cmake" -S "$ARM_ROOT" -B "$native" -G Ninja -DCMAKE_MAKE_PROGRAM="$tools/ninja" -DCMAKE_BUILD_TYPE=Release >/dev/null
"$tools/cmake" --build "$native" >/dev/null
want=$("$native/mnist_demo" "${demo_args[@]}" --out "$native/demo.lenet" "$raw" | file_accuracy)
stripped_size() { "$1" -o "$2.stripped" "$2" && wc -c <"$2.stripped"; }  # STRIP LIBRARY
sizes=("x86_64 $(stripped_size strip "$native/liblenet.so")")

for t in "${targets[@]}"; do
  arm_prepare_target "$t"
  build=$ARM_DIR/capi-$t
  echo "== C API for $t: cross-build, then examples/c/mnist_demo under $qemu (QEMU_CPU=$qemu_cpu)"
  start=$SECONDS
  "$tools/cmake" -S "$ARM_ROOT" -B "$build" -G Ninja -DCMAKE_MAKE_PROGRAM="$tools/ninja" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$toolchain" >/dev/null
  "$tools/cmake" --build "$build" >/dev/null
  out=$(ARM_TIMEOUT=900 arm_run "$t" -E LD_LIBRARY_PATH="$build" "$build/mnist_demo" "${demo_args[@]}" \
        --out "$build/demo.lenet" "$raw")
  sed 's/^/   /' <<<"$out"
  got=$(file_accuracy <<<"$out")
  grep -q "instruction set neon" <<<"$out" || { echo "test_arm_capi.sh: $t did not run NEON" >&2; exit 1; }
  python3 -c "import sys; a, b = map(float, sys.argv[1:]); sys.exit(abs(a - b) > 0.003)" "$want" "$got" || {
    echo "test_arm_capi.sh: $t: the model file's accuracy $got differs from x86-64's $want" >&2
    exit 1
  }
  sizes+=("$t $(stripped_size "$triplet-strip" "$build/liblenet.so")")
  echo "   $t: the model file gives $got (x86-64: $want); $((SECONDS - start)) s"
done
echo "== size of the core library with its C API (liblenet.so, stripped)"
for s in "${sizes[@]}"; do
  read -r name bytes <<<"$s"
  printf '   %-8s %7d bytes (%d KB)\n' "$name" "$bytes" $((bytes / 1024))
done
