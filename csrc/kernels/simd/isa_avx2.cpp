// AVX2 + FMA microkernels (compiled with -mavx2 -mfma; selected at run time only on CPUs that have them).
#include "table.h"
#include "vec_avx2.h"

namespace lenet {

const KernelTable* table_avx2() {
    using V = simd::VecAVX2;
    static const KernelTable t = simd::make_table<V>("gemm_nn_6x16__avx2", "gemm_nt_3x3__avx2",
                                                     "conv_direct_2oc_x_3px_x_16lanes__avx2",
                                                     "conv_direct_dw_2oc_x_3kx_x_16lanes__avx2",
                                                     "conv_pool_3oc_x_2rows_x_16px__avx2", nullptr, nullptr, nullptr,
                                                     "conv_pool_sparse_bwd_1krow_x_4vec_1krow_x_8vec__avx2");
    return &t;
}

}  // namespace lenet
