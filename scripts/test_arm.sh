#!/usr/bin/env bash
# Tests the ARM wheels in dist/ (scripts/build_arm_wheels.sh) on this x86-64 machine under qemu user-mode
# emulation, as boards would run them: aarch64 as a Cortex-A72, armv7 as a Cortex-A7 (NEON, VFPv4).
# Usage: LENET_MNIST_DIR=DIR scripts/test_arm.sh [aarch64] [armv7]   (default: both)
#
# Each wheel is pip-installed into build/arm/install-<target>/ and pytest runs from that folder, so `import lenet`
# is the installed package, never the source tree. With numpy and pytest for the target (build/arm/cache/), the
# target's Debian CPython runs:
#   tests/test_kernels.py, tests/test_vector_tails.py   every kernel of the NEON and reference tables against
#                                                       numpy, on shapes that hit every tail of a 4-float vector
#   tests/test_gradients.py                             every op's gradient against finite differences
#   tests/test_short_training.py                        LeNet-5 on 3000 MNIST images, one epoch: accuracy bound
# and, for aarch64, tests/test_quantize.py -k kernel as a Neoverse-N1 (the int8 sdot kernels against the reference).
# The whole test files run: emulation is slow (SIMD 80-270x) but these take about 2 minutes per target.
# A skipped test fails the run (e.g. MNIST not found), and so does a wheel that does not select NEON. The armv7
# wheel also runs on a CPU without NEON (a Cortex-R5F: VFPv3-D16, the armhf baseline): the reference kernels.
set -euo pipefail
. "$(dirname "$0")/arm_env.sh"
export ARM_TIMEOUT=${ARM_TIMEOUT:-600}  # for each qemu run but pytest's (arm_pytest): a hang fails, not stalls
targets=("$@")
((${#targets[@]})) || targets=("${ARM_TARGETS[@]}")

if [ -z "${LENET_MNIST_DIR:-}" ] || [ ! -d "$LENET_MNIST_DIR" ]; then
  echo "test_arm.sh: set LENET_MNIST_DIR to the folder of the four MNIST IDX files" >&2
  exit 1
fi
export LENET_MNIST_DIR=$(cd "$LENET_MNIST_DIR" && pwd)
tests=(test_kernels.py test_vector_tails.py test_gradients.py test_short_training.py)
arm_apt_install

# pytest under qemu from the installed package's folder: arm_pytest TARGET LOG PYTEST-ARGS... The whole output goes
# to LOG, and all but the progress dots to the terminal as it comes. A hang shows where it was and does not stall CI:
# a test still running after 5 minutes (the slowest takes about 1) dumps every thread's Python stack
# (faulthandler_timeout in pyproject.toml), and a run still going after 15 minutes (2 are usual) is ended, said so,
# and run once more; a second hang fails the run.
pytest_timeout=${ARM_PYTEST_TIMEOUT:-900}  # seconds
arm_pytest() {
  local t=$1 log=$2 try
  shift 2
  for try in 1 2; do
    rm -f "$log.status"
    (cd "$install" && ARM_TIMEOUT=$pytest_timeout arm_python "$t" -m pytest -q -p no:cacheprovider "$@" \
       || echo $? >"$log.status") 2>&1 | tee "$log" | grep --line-buffered -v '^\.*  *\[ *[0-9]*%\]$' || true
    case $(cat "$log.status" 2>/dev/null) in 124 | 137) ;; *) return 0 ;; esac
    echo "test_arm.sh: $t: pytest was still running after $pytest_timeout s and was ended (try $try of 2)" >&2
  done
}
# pytest's last line ("N passed in S s"), after the exit status when that was not 0 (124: ended by ARM_TIMEOUT)
pytest_summary() {
  [ ! -f "$1.status" ] || printf 'exit status %s: ' "$(cat "$1.status")"
  tail -n 1 "$1" | tr -d '=' | sed 's/^ *//'
}

for t in "${targets[@]}"; do
  arm_prepare_target "$t"
  wheel=$(ls "$ARM_ROOT"/dist/lenet-*-cp311-cp311-"$plat".whl 2>/dev/null) || {
    echo "test_arm.sh: no $plat wheel in dist/: run scripts/build_arm_wheels.sh $t first" >&2
    exit 1
  }
  echo "== $t: $(basename "$wheel") under $qemu (QEMU_CPU=$qemu_cpu)"
  start=$SECONDS
  install=$ARM_DIR/install-$t
  rm -rf "$install"
  python3 -m pip install --quiet --target "$install" --platform "$plat" --python-version 3.11 \
    --implementation cp --abi cp311 --only-binary=:all: --no-deps "$wheel"
  export PYTHONPATH=$install:$site
  (cd "$install" && arm_python "$t" - "$install" <<'EOF'
import sys, lenet
assert lenet.__file__.startswith(sys.argv[1] + "/"), ("not the installed package", lenet.__file__)
k = lenet.kernels()
assert k["isa"] == "neon", ("NEON not selected", k)
print(f"   {k['isa']} on {', '.join(k['cpu_features'])}: {k['ops']['linear_forward']}, {k['ops']['sgd']}")
EOF
  )
  log=$ARM_DIR/pytest-$t.log
  arm_pytest "$t" "$log" "${tests[@]/#/$ARM_ROOT/tests/}"
  summary=$(pytest_summary "$log")
  if ! [[ $summary =~ ^[0-9]+\ passed(,\ [0-9]+\ warnings?)?\ in ]]; then
    echo "test_arm.sh: $t: tests failed or were skipped: $summary (log: $log)" >&2
    exit 1
  fi
  if [ -n "$qemu_cpu_no_neon" ]; then  # the same wheel on a CPU without NEON: the reference kernels, and they work
    (cd "$install" && ARM_QEMU_CPU=$qemu_cpu_no_neon arm_python "$t" - <<'EOF'
import numpy as np, lenet
import lenet.functional as F
k = lenet.kernels()
assert k["available"] == ["reference"] and k["isa"] == "reference", k
lenet.seed(0)
model = lenet.LeNet5()
x = np.random.default_rng(0).random((17, 1, 28, 28), dtype=np.float32)
loss = F.cross_entropy(model(x), np.arange(17) % 10)
loss.backward()
assert np.isfinite(float(loss.data)) and all(np.isfinite(p.grad).all() for p in model.parameters())
print(f"   without NEON ({k['cpu_features'] or 'no SIMD'}): {k['isa']} kernels, LeNet-5 forward and backward run")
EOF
    )
  fi
  if [ "$t" = aarch64 ]; then  # a core with the dot-product extension: the int8 sdot kernels against the reference
    log=$ARM_DIR/pytest-$t-dotprod.log
    ARM_QEMU_CPU=neoverse-n1 arm_pytest "$t" "$log" "$ARM_ROOT/tests/test_quantize.py" -k "kernel"
    (cd "$install" && ARM_QEMU_CPU=neoverse-n1 arm_python "$t" -c \
       'import lenet; k = lenet.kernels()["int8"]; assert "neon_dot" in k["available"], k; print("   int8:", k["conv"])')
    dot=$(pytest_summary "$log")
    if ! [[ $dot =~ ^[0-9]+\ passed(,\ [0-9]+\ deselected)?(,\ [0-9]+\ warnings?)?\ in ]]; then
      echo "test_arm.sh: $t (neoverse-n1): int8 kernel tests failed or were skipped: $dot (log: $log)" >&2
      exit 1
    fi
    echo "   $t as a Neoverse-N1 (sdot): int8 kernels, $(grep -o '[0-9]* passed' <<<"$dot")"
  fi
  echo "   $t: $(grep -o '[0-9]* passed' <<<"$summary") in $((SECONDS - start)) s"
done
