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
// Its backward, L == 16: dy and argmax [nblk][oc][oh/2][ow/2][L] -> dx (overwritten, may be null), dw [oc][ic][kh][kw]
// +=, db [oc] += (may be null), as the captured training step computes them (block::conv_pool_backward).
void conv_pool_backward(const ConvShape& s, int nblk, const float* x, const float* w, const float* argmax,
                        const float* dy, float* dx, float* dw, float* db);

enum class PoolKind { Max, Avg };
// x [nblk][c][ih][iw][L] -> y [nblk][c][oh][ow][L]; s.ic is the channel count, no padding.
// With relu, max pooling is fused with a following (or preceding) ReLU.
void pool2d_forward(PoolKind kind, const ConvShape& s, int nblk, const float* x, float* y, bool relu = false);
// dx (overwritten) from dy; max pooling routes to the first maximum of each window.
void pool2d_backward(PoolKind kind, const ConvShape& s, int nblk, const float* x, const float* y, const float* dy,
                     float* dx, bool relu = false);

// x [nblk][in][L], w [out][in], b [out] -> y [nblk][out][L]; with relu, then a ReLU on each block while it is in
// cache.
void linear_forward(int nblk, int L, int in, int out, const float* x, const float* w, const float* b, float* y,
                    bool relu = false);
// dx [nblk][in][L] overwritten (may be null); dw [out][in] +=; db [out] += (may be null). relu_y: the output of a
// linear_forward with relu (or null): dy is the ReLU's output gradient, masked where relu_y is 0 block by block.
void linear_backward(int nblk, int L, int in, int out, const float* x, const float* w, const float* dy, float* dx,
                     float* dw, float* db, const float* relu_y = nullptr);

enum class Activation { Relu, Tanh };
void activation_forward(Activation a, ptrdiff_t n, const float* x, float* y);
void activation_backward(Activation a, ptrdiff_t n, const float* y, const float* dy, float* dx);

// logits [nblk][K][L], label [nblk*L] (-1 marks a padding lane) -> loss [nblk*L]; dlogits = dloss * scale.
void softmax_xent(int nblk, int K, int L, const float* logits, const int32_t* label, float scale, float* loss,
                  float* dlogits);

// An optimiser update: SGD (momentum, Nesterov) or Adam, with L2 weight decay, over flat buffers. The captured
// training step applies it to each range of gradients as soon as that range is final, on the thread that computed
// it and while it is in cache, instead of a separate pass over every parameter afterwards (which on two threads
// also pulls the other core's half of the gradients across); apply_update is that separate pass. Both run the same
// kernels element by element: the results are bit-identical.
// w, g: the optimiser's flat parameter and gradient buffers of n floats; s1, s2 its state (SGD: the velocity in
// s1; Adam: the first and second moments). Every trainable layer's dw / db must lie in g at the offset of its
// w / b in w, and they must cover g exactly (TrainStep::check_update).
struct Update {
    enum class Kind { Sgd, Adam };
    Kind kind = Kind::Sgd;
    float lr = 0, momentum = 0, weight_decay = 0;  // SGD: momentum; both: L2 weight decay added to the gradient
    int nesterov = 0;
    float b1 = 0, b2 = 0, eps = 0;                 // Adam
    int step = 0;                                  // Adam: 1-based count of updates, this one included
    float* w = nullptr;
    const float* g = nullptr;
    float* s1 = nullptr;
    float* s2 = nullptr;
    ptrdiff_t n = 0;
    // The update of the count parameters whose gradients start at grad (inside g).
    void apply(const KernelTable& k, const float* grad, ptrdiff_t count) const;
};

// The whole update: every parameter, split in ranges over the thread pool.
void apply_update(const Update& u);

// Whether what every thread reads in a step and one thread then rewrites (the weights in the optimiser's update, a
// dense layer's batch gathers, the bf16 copies of the weights) is written with cache-bypassing stores (kernels.h's
// and bf16.h's stream flags): on more than one thread, where a plain store waits for the other cores' copies of its
// line to be invalidated; not on one, whose own cache keeps the data for the next read (simd/eltwise.h: the
// measurements).
bool stream_shared_writes();

// The active table's fma_loop on every thread for about `seconds`: the machine's peak for that ISA, in GFLOP/s.
double fma_peak_gflops(double seconds);

}  // namespace lenet::ops
