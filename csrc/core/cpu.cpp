#include "cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if (defined(__arm__) || defined(__aarch64__)) && defined(__linux__)  // Linux and Android: HWCAP
#include <sys/auxv.h>
#endif

namespace lenet {

#if defined(__x86_64__) || defined(__i386__)
static unsigned long long read_xcr0() {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<unsigned long long>(hi) << 32) | lo;
}

// Linux gives a process AMX tile data only when asked (kernel 5.16 on); elsewhere AMX is not used.
static bool tile_data_permitted() {
#if defined(__x86_64__) && defined(__linux__)
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
}

static CpuFeatures detect() {
    CpuFeatures f;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool sse2 = d & (1u << 26), fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28);
    if (sse2) f.names.push_back("sse2");
    const unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
    const bool ymm_os = (xcr0 & 0x6) == 0x6, zmm_os = (xcr0 & 0xe6) == 0xe6;
    if (avx && ymm_os) f.names.push_back("avx");
    if (fma && ymm_os) f.names.push_back("fma");
    unsigned max_leaf = __get_cpuid_max(0, nullptr);
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30),
                   avx512vl = b & (1u << 31), vnni = c & (1u << 11), amx_bf16 = d & (1u << 22),
                   amx_tile = d & (1u << 24);
        const bool tile_os = (xcr0 & 0x60000) == 0x60000;  // XTILECFG, XTILEDATA
        if (avx2 && ymm_os) f.names.push_back("avx2");
        f.avx2_fma = avx && avx2 && fma && ymm_os;
        if (zmm_os) {
            if (avx512f) f.names.push_back("avx512f");
            if (avx512bw) f.names.push_back("avx512bw");
            if (avx512vl) f.names.push_back("avx512vl");
            if (vnni) f.names.push_back("avx512_vnni");
            f.avx512f = avx512f && f.avx2_fma;
            f.avx512_vnni = f.avx512f && avx512bw && avx512vl && vnni;
        }
        __cpuid_count(7, 1, a, b, c, d);
        f.avx_vnni = f.avx2_fma && (a & (1u << 4));
        if (f.avx_vnni) f.names.push_back("avx_vnni");
        const bool avx512_bf16 = a & (1u << 5);
        if (zmm_os && avx512_bf16) f.names.push_back("avx512_bf16");
        f.avx512_bf16 = f.avx512f && avx512bw && avx512vl && avx512_bf16 && zmm_os;
        if (tile_os && amx_tile && amx_bf16) {
            f.names.push_back("amx_bf16");
            f.amx_bf16 = f.avx512_bf16 && tile_data_permitted();
        }
    }
    return f;
}
#elif defined(__aarch64__)
static CpuFeatures detect() {
    CpuFeatures f;
    f.neon = true;
    f.names.push_back("asimd");
#if defined(__linux__)
    const unsigned long hw = getauxval(AT_HWCAP);
    f.asimd_dot = hw & (1ul << 20);  // HWCAP_ASIMDDP
#endif  // elsewhere (iOS, macOS) the dot-product extension is not looked for: the int8 kernels use the reference
    if (f.asimd_dot) f.names.push_back("asimddp");
    return f;
}
#elif defined(__arm__) && defined(__linux__)
static CpuFeatures detect() {
    CpuFeatures f;
    f.neon = getauxval(AT_HWCAP) & (1ul << 12);  // HWCAP_NEON
    if (f.neon) f.names.push_back("neon");
    return f;
}
#else
static CpuFeatures detect() { return {}; }
#endif

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

}  // namespace lenet
