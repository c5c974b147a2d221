#include "int8_dispatch.h"

#include <string>

#include "../../core/cpu.h"
#include "../../core/dispatch.h"

namespace lenet {

#if !defined(LENET_HAVE_X86_SIMD)
const Int8Table* int8_table_avx2() { return nullptr; }
const Int8Table* int8_table_avx512_vnni() { return nullptr; }
#endif
#if !defined(LENET_HAVE_AVX_VNNI)
const Int8Table* int8_table_avx_vnni() { return nullptr; }
#endif
#if !defined(LENET_HAVE_NEON_DOT)
const Int8Table* int8_table_neon_dot() { return nullptr; }
#endif

const Int8Table* int8_table_named(const std::string& name) {
    const CpuFeatures& f = cpu_features();
    if (name == "reference") return &kInt8Reference;
    if (name == "avx2") return f.avx2_fma ? int8_table_avx2() : nullptr;
    if (name == "avx_vnni") return f.avx2_fma && f.avx_vnni ? int8_table_avx_vnni() : nullptr;
    if (name == "avx512_vnni") return f.avx512_vnni ? int8_table_avx512_vnni() : nullptr;
    if (name == "neon_dot") return f.asimd_dot ? int8_table_neon_dot() : nullptr;
    return nullptr;
}

std::vector<std::string> int8_isas() {
    std::vector<std::string> out;
    for (const char* name : {"reference", "avx2", "avx_vnni", "avx512_vnni", "neon_dot"})
        if (int8_table_named(name)) out.push_back(name);
    return out;
}

const Int8Table& int8_kernels() {
    const std::string isa = kernels().isa;
    const char* const* order = nullptr;
    static const char* const kAvx512[] = {"avx512_vnni", "avx_vnni", "avx2", nullptr};
    static const char* const kAvx2[] = {"avx_vnni", "avx2", nullptr};
    static const char* const kNeon[] = {"neon_dot", nullptr};
    if (isa == "avx512") order = kAvx512;
    else if (isa == "avx2") order = kAvx2;
    else if (isa == "neon") order = kNeon;
    for (; order && *order; ++order)
        if (const Int8Table* t = int8_table_named(*order)) return *t;
    return kInt8Reference;
}

}  // namespace lenet
