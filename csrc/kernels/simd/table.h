// Builds the KernelTable of one ISA from the templates; included once by each isa_<name>.cpp.
#pragma once
#include "../kernels.h"
#include "conv_direct.h"
#include "conv_pool_sparse.h"
#include "eltwise.h"
#include "gemm.h"
#include "pool.h"
#include "winograd.h"

namespace lenet::simd {
namespace {

template <class V>
constexpr KernelTable make_table(const char* gemm_nn_name, const char* gemm_nt_name, const char* direct_name,
                                 const char* direct_dw_name, const char* conv_pool_name,
                                 const char* conv_pool_winograd_name = nullptr,
                                 const char* conv_winograd_name = nullptr,
                                 const char* conv_pool_dx_winograd_name = nullptr,
                                 const char* conv_pool_sparse_name = nullptr) {
    return KernelTable{
        V::isa, V::W,
        gemm_nn<V>, gemm_nt<V>, conv_direct_fwd<V>, conv_direct_dw<V>, conv_pool_fwd<V>,
        winograd_pool_slot<V>(), winograd_conv_slot<V>(), winograd_dx_slot<V>(),
        conv_pool_dw<V>,
        conv_pool_route<V>, sparse_pool_backward_slot<V>(),
        maxpool_fwd<V>, maxpool_bwd<V>, avgpool_fwd<V>, avgpool_bwd<V>,
        bias_add<V>, bias_grad<V>, dense_gather<V>,
        relu_fwd<V>, relu_bwd<V>, tanh_fwd<V>, tanh_bwd<V>,
        softmax_xent<V>, sgd_update<V>, adam_update<V>, pack_u8_16<V>, fma_loop<V>,
        gemm_nn_name, gemm_nt_name, direct_name, direct_dw_name, conv_pool_name, conv_pool_winograd_name,
        conv_winograd_name, conv_pool_dx_winograd_name, conv_pool_sparse_name,
    };
}

}  // namespace
}  // namespace lenet::simd
