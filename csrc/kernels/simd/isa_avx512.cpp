// AVX-512F microkernels (compiled with -mavx512f -mavx2 -mfma; selected at run time only on CPUs that have them).
#include "table.h"
#include "vec_avx512.h"

namespace lenet {

const KernelTable* table_avx512() {
    using V = simd::VecAVX512;
    static const KernelTable t = simd::make_table<V>("gemm_nn_6x64__avx512", "gemm_nt_4x4__avx512",
                                                     "conv_direct_4oc_x_5px_x_16lanes__avx512",
                                                     "conv_direct_dw_4oc_x_5kx_x_16lanes__avx512",
                                                     "conv_pool_6oc_x_2rows_x_32px__avx512",
                                                     "conv_pool_winograd_f2x2_3oc_f5x5_2oc_x_16lanes__avx512",
                                                     "conv_winograd_f2x2_3oc_x_16lanes__avx512",
                                                     "conv_pool_dx_winograd_f5x5_6ic_x_4pos_x_16lanes__avx512",
                                                     "conv_pool_sparse_bwd_5krows_x_2vec_2krows_x_4vec__avx512");
    return &t;
}

}  // namespace lenet
