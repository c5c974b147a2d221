// The reference table: every slot filled with its plain-loop definition.
#include "ref.h"

namespace lenet {

const KernelTable kTableReference = {
    "reference", 1,
    ref::gemm_nn, ref::gemm_nt, ref::conv_direct_fwd, ref::conv_direct_dw, ref::conv_pool_fwd,
    ref::conv_pool_fwd_winograd, ref::conv_winograd_fwd, ref::conv_pool_dx_winograd,
    ref::conv_pool_dw,
    ref::conv_pool_route, ref::conv_pool_bwd_sparse,
    ref::maxpool_fwd, ref::maxpool_bwd, ref::avgpool_fwd, ref::avgpool_bwd,
    ref::bias_add, ref::bias_grad, ref::dense_gather,
    ref::relu_fwd, ref::relu_bwd, ref::tanh_fwd, ref::tanh_bwd,
    ref::softmax_xent, ref::sgd_update, ref::adam_update, ref::pack_u8_16, ref::fma_loop,
    "gemm_nn__reference", "gemm_nt__reference", "conv_direct__reference", "conv_direct_dw__reference",
    "conv_pool__reference", "conv_pool_winograd_f2x2_f5x5__reference",
    "conv_winograd_f2x2__reference", "conv_pool_dx_winograd_f5x5__reference", "conv_pool_sparse_bwd__reference",
};

}  // namespace lenet
