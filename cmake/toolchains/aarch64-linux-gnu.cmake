# Cross-compiling for 64-bit ARM Linux (aarch64) with Debian's g++-aarch64-linux-gnu.
# NEON (Advanced SIMD with FMA) is part of the aarch64 baseline: no extra flags.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# Headers and libraries come from the cross compiler's own sysroot; programs (cmake, ninja) from the host.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
