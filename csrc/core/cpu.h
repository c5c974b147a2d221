// What the CPU can run, read once: x86 cpuid + XCR0 (the OS must save the wider registers), ARM HWCAP.
#pragma once
#include <string>
#include <vector>

namespace lenet {

struct CpuFeatures {
    bool avx2_fma = false;   // AVX2 and FMA3, with OS support for YMM state
    bool avx512f = false;    // AVX-512 Foundation, with OS support for ZMM/opmask state
    bool neon = false;       // Advanced SIMD (always on aarch64; HWCAP on armv7)
    bool avx512_vnni = false;  // AVX512_VNNI with AVX-512 F, BW and VL (int8 dot products, vpdpbusd on zmm)
    bool avx_vnni = false;     // AVX-VNNI: vpdpbusd on ymm, VEX-encoded
    bool asimd_dot = false;    // AArch64 dot-product extension (sdot/udot; HWCAP_ASIMDDP)
    bool avx512_bf16 = false;  // AVX512-BF16 with AVX-512 F, BW and VL (bf16 pair dot products, vdpbf16ps on zmm)
    // AMX-TILE, AMX-BF16 and AVX512-BF16 (with AVX-512 F, BW, VL), the OS saving tile state (XCR0), and its
    // permission for this process to use tile data (Linux: arch_prctl ARCH_REQ_XCOMP_PERM, asked here once)
    bool amx_bf16 = false;
    std::vector<std::string> names;  // every feature found, for reporting
};

const CpuFeatures& cpu_features();

}  // namespace lenet
