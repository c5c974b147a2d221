// Which Bf16Table serves bf16 training, where the active fp32 instruction set is avx512: amx where the CPU has AMX-BF16
// and AVX512-BF16 with the OS's permission for tile data (CpuFeatures::amx_bf16), else avx512_bf16 where it has
// AVX512-BF16; the reference everywhere else.
#pragma once
#include <string>
#include <vector>

#include "bf16.h"

namespace lenet {

const Bf16Table& bf16_kernels();
// Every bf16 table this build has and this CPU runs, reference first (for tests and reports).
std::vector<std::string> bf16_isas();
// The table of that name, or null when unavailable here.
const Bf16Table* bf16_table_named(const std::string& name);

}  // namespace lenet
