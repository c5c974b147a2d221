// What the CPU can run, read once: x86 cpuid + XCR0 (the OS must save the wider registers), ARM HWCAP.
#pragma once
#include <string>
#include <vector>

namespace lenet {

struct CpuFeatures {
    bool avx2_fma = false;   // AVX2 and FMA3, with OS support for YMM state
    bool avx512f = false;    // AVX-512 Foundation, with OS support for ZMM/opmask state
    bool neon = false;       // Advanced SIMD (always on aarch64; HWCAP on armv7)
    std::vector<std::string> names;  // every feature found, for reporting
};

const CpuFeatures& cpu_features();

}  // namespace lenet
