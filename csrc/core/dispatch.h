// Which KernelTable serves the ops: chosen once (best ISA the CPU has, or LENET_ISA), switchable for tests.
#pragma once
#include <string>
#include <vector>

#include "../kernels/kernels.h"

namespace lenet {

// The ISAs this build has and this CPU can run, best last: "reference", then "avx2", "avx512" or "neon".
std::vector<std::string> available_isas();
// The active table. The first call picks the best available ISA, or the one named by LENET_ISA
// (reference | avx2 | avx512 | neon; an unknown or unavailable name throws std::invalid_argument).
const KernelTable& kernels();
// Switches the active table (same names); throws std::invalid_argument if unavailable here.
void set_isa(const std::string& name);
// Where the choice came from: "cpu" or "LENET_ISA" or "set_isa".
const std::string& isa_source();

}  // namespace lenet
