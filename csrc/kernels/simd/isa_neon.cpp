// ARM Advanced SIMD microkernels: aarch64 (always present), armv7 (this file alone compiled with -mfpu=neon;
// selected at run time only when HWCAP reports NEON).
#include "table.h"
#include "vec_neon.h"

namespace lenet {

namespace {
using V = simd::VecNEON;
// The tiles the templates pick from the register budget, spelled out in the kernel names below.
constexpr int kNV = simd::gemm_nn_nv<V>(), kMR = simd::gemm_nn_mr<V, kNV>(), kNT = simd::gemm_nt_r<V>();
constexpr int kOCB = simd::direct_ocb<V>(), kPXB = simd::direct_pxb<V>(), kKXB = simd::direct_dw_kxb<V>();
constexpr int kPoolOCB = simd::pool_row_ocb<V, simd::kPoolRowMaxVectors>();
#if defined(__aarch64__)
static_assert(kMR == 6 && kNV * V::W == 16 && kNT == 4 && kOCB == 2 && kPXB == 3 && kKXB == 3 && kPoolOCB == 6,
              "names below");
#define LENET_NEON_NAMES "gemm_nn_6x16__neon", "gemm_nt_4x4__neon", "conv_direct_2oc_x_3px_x_16lanes__neon", \
                         "conv_direct_dw_2oc_x_3kx_x_16lanes__neon", "conv_pool_6oc_x_2rows_x_8px__neon"
#else
static_assert(kMR == 6 && kNV * V::W == 8 && kNT == 3 && kOCB == 2 && kPXB == 1 && kKXB == 1 && kPoolOCB == 3,
              "names below");
#define LENET_NEON_NAMES "gemm_nn_6x8__neon", "gemm_nt_3x3__neon", "conv_direct_2oc_x_1px_x_16lanes__neon", \
                         "conv_direct_dw_2oc_x_1kx_x_16lanes__neon", "conv_pool_3oc_x_2rows_x_8px__neon"
#endif
}  // namespace

const KernelTable* table_neon() {
    static const KernelTable t = simd::make_table<V>(LENET_NEON_NAMES);
    return &t;
}

}  // namespace lenet
