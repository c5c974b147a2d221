// Which Int8Table serves int8 inference: the one matching the active fp32 instruction set (lenet.set_isa /
// LENET_ISA), refined by what the CPU has:
//   reference -> reference;  avx2 -> avx_vnni if the CPU has AVX-VNNI, else avx2;
//   avx512 -> avx512_vnni if the CPU has AVX512_VNNI (with BW and VL), else as avx2;
//   neon -> neon_dot if the CPU has the dot-product extension (asimddp), else reference.
#pragma once
#include <string>
#include <vector>

#include "int8.h"

namespace lenet {

const Int8Table& int8_kernels();
// Every int8 table this build has and this CPU runs, reference first (for tests and reports).
std::vector<std::string> int8_isas();
// The table of that name, or null when unavailable here.
const Int8Table* int8_table_named(const std::string& name);

}  // namespace lenet
