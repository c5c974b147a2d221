# Cross-compiling for 32-bit ARM Linux, hard float (armv7, Debian armhf) with Debian's g++-arm-linux-gnueabihf.
# The baseline is the compiler's default (armv7-a, VFPv3-D16, no NEON): CMakeLists.txt compiles the NEON kernels
# alone with -mfpu=neon, and they are used only when the CPU reports NEON (HWCAP).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
