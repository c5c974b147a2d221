// Plain-loop reference microkernels: the algorithmic definition of every slot of KernelTable and the
// fallback on CPUs without a SIMD table. Written for clarity, not speed.
#pragma once
#include "../kernels.h"

namespace lenet::ref {

void gemm_nn(int M, int N, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa, const float* B, ptrdiff_t ldb,
             float* C, ptrdiff_t ldc, int accumulate, const int* ks);
void gemm_nt(int M, int N, int K, const float* A, ptrdiff_t lda, const float* B, ptrdiff_t ldb, float* C,
             ptrdiff_t ldc, int accumulate);
void conv_direct_fwd(const ConvShape* s, const float* xpad, const float* w, const float* w_cl, const float* bias,
                     float* y);
void conv_direct_dw(const ConvShape* s, const float* xpad, const float* dy, int bh, int bw, float* dw);
void conv_pool_fwd(const ConvShape* s, const float* xpad, const float* w, const float* w_cl, const float* bias,
                   float* y, float* argmax, int relu);
void conv_pool_fwd_winograd(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                            float* argmax, int relu, float* tile);
void conv_winograd_fwd(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y, float* tile);
void conv_pool_dx_winograd(const ConvShape* s, const float* g, int bh, int bw, const float* u, float* dx,
                           float* work);
void conv_pool_dw(const ConvShape* s, const float* xpad, const float* argmax, const float* dy, float* dw, float* db);
void conv_pool_route(const ConvShape* s, const float* argmax, const float* dy, float* g, int bh, int bw);
void conv_pool_bwd_sparse(const ConvShape* s, const float* xpad, const float* w, const float* argmax,
                          const float* dy, float* dw, float* db, float* dx, float* work);
void maxpool_fwd(const ConvShape* s, const float* x, float* y, int relu);
void maxpool_bwd(const ConvShape* s, const float* x, const float* y, const float* dy, float* dx, int relu);
void avgpool_fwd(const ConvShape* s, const float* x, float* y);
void avgpool_bwd(const ConvShape* s, const float* dy, float* dx);
void bias_add(int C, ptrdiff_t P, const float* b, float* y);
void bias_grad(int C, ptrdiff_t P, const float* dy, float* db);
void dense_gather(int L, int in, int out, ptrdiff_t col0, ptrdiff_t B, int P, const float* x, const float* dy,
                  float* xP, float* dyT, int stream);
void pack_u8_16(size_t F, const uint8_t* const* src, float* out);
void relu_fwd(ptrdiff_t n, const float* x, float* y);
void relu_bwd(ptrdiff_t n, const float* y, const float* dy, float* dx);
void tanh_fwd(ptrdiff_t n, const float* x, float* y);
void tanh_bwd(ptrdiff_t n, const float* y, const float* dy, float* dx);
void softmax_xent(int K, int L, const float* logits, const int32_t* label, float scale, float* loss,
                  float* dlogits);
void sgd_update(ptrdiff_t n, float* w, const float* g, float* v, float lr, float momentum, float wd, int nesterov,
                int stream);
void adam_update(ptrdiff_t n, float* w, const float* g, float* m, float* v, float lr, float b1, float b2, float eps,
                 float wd, int step, int stream);

double fma_loop(int64_t iters, float* sink);

}  // namespace lenet::ref
