#include "bf16_dispatch.h"

#include "../../core/cpu.h"
#include "../../core/dispatch.h"

namespace lenet {

#if !defined(LENET_HAVE_AVX512_BF16)
const Bf16Table* bf16_table_avx512() { return nullptr; }
#endif
#if !defined(LENET_HAVE_AMX)
const Bf16Table* bf16_table_amx() { return nullptr; }
#endif

const Bf16Table* bf16_table_named(const std::string& name) {
    if (name == "reference") return &kBf16Reference;
    if (name == "avx512_bf16") return cpu_features().avx512_bf16 ? bf16_table_avx512() : nullptr;
    if (name == "amx") return cpu_features().amx_bf16 ? bf16_table_amx() : nullptr;
    return nullptr;
}

std::vector<std::string> bf16_isas() {
    std::vector<std::string> out;
    for (const char* name : {"reference", "avx512_bf16", "amx"})
        if (bf16_table_named(name)) out.push_back(name);
    return out;
}

const Bf16Table& bf16_kernels() {
    if (std::string(kernels().isa) == "avx512")
        for (const char* name : {"amx", "avx512_bf16"})
            if (const Bf16Table* t = bf16_table_named(name)) return *t;
    return kBf16Reference;
}

}  // namespace lenet
