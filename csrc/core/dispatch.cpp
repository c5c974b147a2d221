#include "dispatch.h"

#include <cstdlib>
#include <stdexcept>

#include "cpu.h"

namespace lenet {

#if !defined(LENET_HAVE_X86_SIMD)
const KernelTable* table_avx2() { return nullptr; }
const KernelTable* table_avx512() { return nullptr; }
#endif
#if !defined(LENET_HAVE_NEON)
const KernelTable* table_neon() { return nullptr; }
#endif

namespace {

const KernelTable* table_named(const std::string& name) {
    const CpuFeatures& f = cpu_features();
    if (name == "reference") return &kTableReference;
    if (name == "avx2") return f.avx2_fma ? table_avx2() : nullptr;
    if (name == "avx512") return f.avx512f ? table_avx512() : nullptr;
    if (name == "neon") return f.neon ? table_neon() : nullptr;
    return nullptr;
}

std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

const KernelTable* checked(const std::string& name, const char* who) {
    const KernelTable* t = table_named(name);
    if (!t)
        throw std::invalid_argument(std::string(who) + ": instruction set '" + name +
                                    "' is not available on this CPU/build (available: " + joined(available_isas()) +
                                    ")");
    return t;
}

struct Active {
    const KernelTable* table = nullptr;
    std::string source;
};

Active& active() {
    static Active a = [] {
        Active a;
        if (const char* env = std::getenv("LENET_ISA"); env && *env) {
            a.table = checked(env, "LENET_ISA");
            a.source = "LENET_ISA";
        } else {
            a.table = checked(available_isas().back(), "cpu");
            a.source = "cpu";
        }
        return a;
    }();
    return a;
}

}  // namespace

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    for (const char* name : {"reference", "avx2", "avx512", "neon"})
        if (table_named(name)) out.push_back(name);
    return out;
}

const KernelTable& kernels() { return *active().table; }

void set_isa(const std::string& name) {
    Active& a = active();
    a.table = checked(name, "set_isa");
    a.source = "set_isa";
}

const std::string& isa_source() { return active().source; }

}  // namespace lenet
