// Multi-threaded ops over whole batches in the lanes layout [nblk][C][H][W][L] (see kernels/kernels.h).
// Each op splits the batch blocks (or flat ranges) over the thread pool and calls the active KernelTable.
// Forward and backward sit side by side. Inputs are assumed validated by the caller (python/module.cpp).
// Gradient outputs of parameters (dw, db) are accumulated (+=); gradient outputs of activations are overwritten.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../kernels/kernels.h"

namespace lenet::ops {

enum class ConvAlgo { Auto, Im2col, Direct };

// Fills the output size of s from input size, window, stride and padding.
void conv_output_size(ConvShape& s);
// True when the shape-specialised direct kernels can serve this shape under the active table: stride 1 and
// 16 lanes, or for the forward pass alone also 1 lane (one sample, vectorised along the output row).
bool conv_direct_possible(const ConvShape& s, bool backward = true);
// True when algo picks them: Direct where possible, Auto where possible and the table is a SIMD one.
bool conv_uses_direct(const ConvShape& s, ConvAlgo algo, bool backward = true);

// x [nblk][ic][ih][iw][L], w [oc][ic][kh][kw], b [oc] (or null) -> y [nblk][oc][oh][ow][L]
void conv2d_forward(const ConvShape& s, int nblk, const float* x, const float* w, const float* b, float* y,
                    ConvAlgo algo);
// dy [nblk][oc][oh][ow][L] -> dx (overwritten, may be null), dw [oc][ic][kh][kw] +=, db [oc] += (may be null)
void conv2d_backward(const ConvShape& s, int nblk, const float* x, const float* w, const float* dy, float* dx,
                     float* dw, float* db, ConvAlgo algo);

// Stride 1, L == 1 or 16: y [nblk][oc][oh/2][ow/2][L] = the convolution (plus bias) max-pooled 2x2 at stride 2,
// then a ReLU if relu, in one pass (kernels.h: conv_pool_fwd); at 16 lanes also argmax (same shape; may be null).
void conv_pool_forward(const ConvShape& s, int nblk, const float* x, const float* w, const float* b, float* y,
                       float* argmax, bool relu);

enum class PoolKind { Max, Avg };
// x [nblk][c][ih][iw][L] -> y [nblk][c][oh][ow][L]; s.ic is the channel count, no padding.
// With relu, max pooling is fused with a following (or preceding) ReLU.
void pool2d_forward(PoolKind kind, const ConvShape& s, int nblk, const float* x, float* y, bool relu = false);
// dx (overwritten) from dy; max pooling routes to the first maximum of each window.
void pool2d_backward(PoolKind kind, const ConvShape& s, int nblk, const float* x, const float* y, const float* dy,
                     float* dx, bool relu = false);

// x [nblk][in][L], w [out][in], b [out] -> y [nblk][out][L]
void linear_forward(int nblk, int L, int in, int out, const float* x, const float* w, const float* b, float* y);
// dx [nblk][in][L] overwritten (may be null); dw [out][in] +=; db [out] += (may be null)
void linear_backward(int nblk, int L, int in, int out, const float* x, const float* w, const float* dy, float* dx,
                     float* dw, float* db);

enum class Activation { Relu, Tanh };
void activation_forward(Activation a, ptrdiff_t n, const float* x, float* y);
void activation_backward(Activation a, ptrdiff_t n, const float* y, const float* dy, float* dx);

// logits [nblk][K][L], label [nblk*L] (-1 marks a padding lane) -> loss [nblk*L]; dlogits = dloss * scale.
void softmax_xent(int nblk, int K, int L, const float* logits, const int32_t* label, float scale, float* loss,
                  float* dlogits);

void sgd_update(ptrdiff_t n, float* w, const float* g, float* v, float lr, float momentum, float wd, int nesterov);
void adam_update(ptrdiff_t n, float* w, const float* g, float* m, float* v, float lr, float b1, float b2, float eps,
                 float wd, int step);

// The active table's fma_loop on every thread for about `seconds`: the machine's peak for that ISA, in GFLOP/s.
double fma_peak_gflops(double seconds);

}  // namespace lenet::ops
