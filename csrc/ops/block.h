// One block (L samples) of a convolution or a dense layer, shared by the whole-batch ops (conv.cpp, layers.cpp)
// and the captured training step (train_step.cpp). The convolution uses scratch slots 0 and 1 of `thread`.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <cstring>
#include <vector>

#include "../core/aligned.h"
#include "../kernels/bf16/bf16.h"
#include "../kernels/kernels.h"

namespace lenet::ops::block {

size_t floats(int c, int h, int w, int L);  // one block of a [c][h][w][L] activation

// Samples x[rows[l]] (or x[l] when rows is null), each of F values, l < n -> one block [F][L] in the lanes layout
// (lanes past n are zero); uint8 pixels scaled by 1/255 exactly as numpy's images.astype(float32) / 255 (a whole
// block of 16 by k.pack_u8_16).
void pack(const KernelTable& k, int n, size_t F, int L, const float* x, const int64_t* rows, float* out);
void pack(const KernelTable& k, int n, size_t F, int L, const uint8_t* x, const int64_t* rows, float* out);

// The weights a convolution's kernels read besides w [oc][ic][kh][kw], derived from it (Forward keeps them while w
// stays the same): channels-last (conv_weights_channels_last) for the one-sample kernels (lanes 1: a direct
// convolution or a fused conv-pool layer), Winograd's (winograd_2x2_weights, winograd_5x5_weights) for a fused layer
// at 16 lanes that takes it (winograd_pool_shape). derived_weight_floats: how many floats (0: none); derive_weights
// writes them. (They are derived whether or not the kernels in use read them: the instruction set may change.)
size_t derived_weight_floats(const ConvShape& s, bool fused, bool direct);
void derive_weights(const ConvShape& s, const float* w, float* derived);

// y = conv(x, w) + b. `direct`: the shape-specialised kernels (16 lanes, stride 1), else im2col + GEMM. derived:
// derive_weights' (or null: the kernels derive what they need on every call).
void conv_forward(const KernelTable& k, const ConvShape& s, bool direct, const float* x, const float* w,
                  const float* derived, const float* b, float* y, int thread);
// Stride 1, lanes 1 or 16: y [oc][oh/2][ow/2][L] = relu?(2x2 stride-2 max pool of the convolution), and at 16
// lanes argmax (may be null), the window position that won (kernels.h: conv_pool_fwd). derived as above.
void conv_pool_forward(const KernelTable& k, const ConvShape& s, const float* x, const float* w, const float* derived,
                       const float* b, bool relu, float* y, float* argmax, int thread);
// At 16 lanes, stride-1 2x2 convolutions from kWinogradMinChannels input channels on take Winograd's F(2x2, 2x2)
// where the ISA has it (kernels.h: conv_pool_fwd_winograd, conv_winograd_fwd): the fused forward, and the input
// gradient, itself such a convolution (dx_shape). (The MNIST-CoreML-Training graph's 32 -> 32 layer, 13 x 13, on
// AVX-512: the fused forward 108 -> 85 us per block on one thread, and its training step on 2 threads 3717 -> 3558 us,
// medians of 4 interleaved pairs; 32 output channels from 2, 4, 8 and 16 input channels: 10.4 -> 10.2,
// 15.7 -> 13.9, 29.3 -> 23.1 and 57.2 -> 43.7 us. Its input gradient: 129-140 -> 115-120 us per block, and the
// step 3620 -> 3563 us, medians of 4 pairs, faster in 3.)
constexpr int kWinogradMinChannels = 4;
inline bool winograd_shape(const ConvShape& s) {
    return s.lanes == 16 && s.kh == 2 && s.kw == 2 && s.sh == 1 && s.sw == 1 && s.ic >= kWinogradMinChannels;
}
// The fused forward also takes Winograd's F(2x2, 5x5) for 5x5 kernels from as many input channels on: 36
// multiply-adds per channel pair and pooling window instead of 100, with the transforms beside them. (LeNet-5's
// second layer, 6 -> 16 channels, 10 x 10, on AVX-512 of the AMD Zen 4 VM: its forward about 259 -> 139 us per step
// on one thread (perf); the training step on one thread 1474 -> 1347 us and on two 782 -> 733 us, 16 interleaved
// rounds each, faster in 16 and 15.)
inline bool winograd_pool_shape(const ConvShape& s) {
    return winograd_shape(s) || (s.lanes == 16 && s.kh == 5 && s.kw == 5 && s.sh == 1 && s.sw == 1 &&
                                 s.ic >= kWinogradMinChannels);
}
// A fused layer with 5x5 kernels, unpadded, also takes its input gradient through F(2x2, 5x5) backwards where the ISA
// has it (kernels.h: conv_pool_dx_winograd) and the pooling's sparsity does not take it (conv_pool_sparse below),
// from the forward's weights: per pooling window 36 multiply-adds per channel pair instead of the 100 of the padded
// gradient's convolution, which also reads the zero border. (LeNet-5's second layer on AVX-512 of the AMD Zen 4 VM,
// before its backward went through the sparsity: the training step on one thread 1343 -> 1204 us and on two
// 709 -> 637 us, 16 interleaved rounds each, faster in 16 and 15. As a forward F(2x2, 5x5) of the padded gradient
// it would transform the 16 channels of 7 x 7 tiles per block instead of the 6 of 5 x 5.)
inline bool winograd_dx_shape(const ConvShape& s) {
    return s.kh == 5 && s.kw == 5 && s.ph == 0 && s.pw == 0 && winograd_pool_shape(s);
}
// Its backward at 16 lanes: dw and db (overwritten; either may be null) from the pooled output's gradient dy and
// argmax. Without dx (a first layer) the convolution's full-size gradient is never stored (kernels.h: conv_pool_dw);
// with dx it is routed into the interior of dy_pad (conv_pool_route; required with dx, its border zero, sized by
// padded_dy_floats), from which the direct kernels take dW and dX (wt as in conv_backward; where dx_reads_derived,
// the forward's derived weights, and dX goes through conv_pool_dx_winograd, scratch slot 9). bf16 (may be null): dW
// from the routed gradient in bf16 (conv_bf16.h; TrainStep's Precision::Bf16) on its kernels `t`, and dX too when
// its wt holds conv_dx_weights_bf16's weights (then the argument wt is not read).
// In fp32, where the kernels take it (conv_pool_sparse below), dw and db instead go through the pooling's sparsity,
// and with dx the input gradient too, from w itself (kernels.h: conv_pool_bwd_sparse; scratch slot 12 of `thread`):
// then neither wt nor dy_pad is read, and may be null.
struct ConvBf16 {
    const Bf16Table* t;
    const uint16_t* wt;
};
void conv_pool_backward(const KernelTable& k, const ConvShape& s, const float* x, const float* w, const float* wt,
                        const float* argmax, const float* dy, float* dw, float* db, float* dx, int thread,
                        float* dy_pad, const ConvBf16* bf16 = nullptr);
// True when conv_pool_backward takes this layer's fp32 backward through the pooling's sparsity on k (kernels.h:
// conv_pool_bwd_sparse, scratch slot 12): its weight and bias gradients, and with_dx its input gradient too. One
// sample at a time, only the products of each window's winning position, where its gradient is nonzero; the direct
// kernels multiply all four positions of every window. (The MNIST-CoreML-Training graph's 32 -> 32 2x2 layer and
// LeNet-5's 6 -> 16 5x5 layer on AVX-512: see kernels/simd/conv_pool_sparse.h. LeNet-5's training step with the
// sparse dW on one thread 1218 -> 1057 us, on two 656 -> 579 us, 12 interleaved rounds each.)
inline bool conv_pool_sparse(const KernelTable& k, const ConvShape& s, bool with_dx) {
    return k.conv_pool_bwd_sparse && conv_pool_sparse_shape(&s, with_dx);
}
// dw [oc][ic][kh][kw] and db [oc] overwritten with this block's gradient (either may be null: not computed); dx
// overwritten (may be null). wt: dx_weights' (below), needed when direct and dx.
// dy_pad (direct only; may be null): a buffer of padded_dy_floats(s) whose border the caller keeps zero (zeroed
// once, used for nothing else), for dY zero-padded as the input gradient's convolution reads it: only its interior
// is written here. Null: a scratch copy, border included, on every call (the border is most of it: LeNet-5's
// second layer pads 10 x 10 to 18 x 18).
void conv_backward(const KernelTable& k, const ConvShape& s, bool direct, const float* x, const float* w,
                   const float* wt, const float* dy, float* dw, float* db, float* dx, int thread,
                   float* dy_pad = nullptr);
size_t padded_dy_floats(const ConvShape& s);
// The weights of dX as a convolution of padded dY (a direct layer's, or a fused layer's), flipped and transposed:
// wt [ic][oc][kh][kw] = w [oc][ic][kh-1-ky][kw-1-kx], in Winograd's form (winograd_2x2_weights) where that
// convolution takes it on k. dx_weight_floats: how many floats; dx_weights writes them.
size_t dx_weight_floats(const KernelTable& k, const ConvShape& s);
void dx_weights(const KernelTable& k, const ConvShape& s, const float* w, float* wt);
// A fused layer whose input gradient goes through F(2x2, 5x5) backwards on k (winograd_dx_shape) reads the
// forward's weights instead (derive_weights': winograd_5x5_weights), as conv_pool_backward's wt.
bool dx_reads_derived(const KernelTable& k, const ConvShape& s);

// A dense layer's whole-batch x^T in column panels of kDensePanel features: xP [ceil(in / P)][B][P], sample b's
// feature i at (i - i % P) * B + b * P + i % P. dW = dyT . x^T takes one panel at a time (dense_dw_rows), so every
// row tile of dW reads B rows of P floats in one contiguous block: from L1 after the first tile, and as one stream
// the prefetchers follow from L2. (Row-major x^T [B][in], with an odd cache-line row stride against L1 set
// conflicts, was 1.1x slower on the MNIST-CoreML-Training graph's fc1: dW 16 x 1152, K = 128, AVX-512.) 48 floats:
// a multiple of every ISA's gemm_nn column tile (16 or 48 on AVX-512, 16 or 8 on AVX2 and NEON, 8 or 4 on armv7).
constexpr int kDensePanel = 48;
static_assert(kDensePanel % 16 == 0, "kernels.h's dense_gather writes 16 features of a panel at a time");
// Floats per sample of xP: `in` rounded up to whole panels.
inline ptrdiff_t dense_xT_floats(int in) { return (ptrdiff_t(in) + kDensePanel - 1) / kDensePanel * kDensePanel; }

// Dense forward on L lanes: y [out][L] = W [out][in] . x [in][L] + b (b may be null). One lane (batch-1 inference)
// copies b into y and adds the dot products to it: bias_add on rows of one float took a masked vector operation per
// output, 11% of LeNet-5's batch-1 latency (12.2 -> 10.5 us on AVX-512). live_x (may be null): where to keep the
// rows of x that are not all 0 (live_rows), for the backward's dense_dx.
void dense_forward(const KernelTable& k, int L, int in, int out, const float* x, const float* w, const float* b,
                   float* y, std::vector<int>* live_x = nullptr);
// C [M][N] = A . B (A read as in gemm_nn) over the rows of B [K][N] that are not all zero, which add nothing: a dense
// layer's input features that no sample of the block has (behind a ReLU or a pooling: on the MNIST-CoreML-Training
// graph's 1152 -> 500 layer about a quarter of them, after the first epoch), and in its input gradient the output
// units that passed no sample's gradient (its 500 units: about 30%, dead to every sample). Scanning B costs one pass
// over it; where no row is zero, the plain gemm_nn runs.
// live (may be null): where to keep those rows' indices.
void gemm_nn_live_rows(const KernelTable& k, int M, int N, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                       const float* B, float* C, std::vector<int>* live = nullptr);
// Dense backward on L lanes (one block, or several side by side): gathers x^T rows [L][in] and dy columns [out][L]
// into the whole-batch xP (panels, above) and dyT [out][B] at samples [col0, col0 + L) (both null for a frozen
// layer), and writes dx [in][L] (may be null; dense_dx, with live_x).
void dense_backward(const KernelTable& k, int L, int in, int out, ptrdiff_t col0, ptrdiff_t B, const float* x,
                    const float* w, const float* dy, float* dx, float* xP, float* dyT,
                    const std::vector<int>* live_x = nullptr);
// A dense layer's input gradient dx [in][L] = W^T . dy, the sum over the units that passed some lane's gradient
// (gemm_nn_live_rows). live_x (may be null): the rows of x that are not all 0, from its forward, where the layers
// below multiply dx by 0 wherever x is 0 (TrainStep::dx_masked): then dx is computed over runs of those rows only,
// and the gaps of kDeadRowRun rows or more between them are written 0. (The MNIST-CoreML-Training graph's
// 1152 -> 500 layer: about a fifth of its input features are 0 for all 64 samples of a chunk, mostly whole channels
// of the convolution below, dead to every sample; LeNet-5's 400 -> 120 layer: about as many, for the 16 of a block.)
void dense_dx(const KernelTable& k, int L, int in, int out, const float* w, const std::vector<int>* live_x,
              const float* dy, float* dx);
constexpr int kDeadRowRun = 16;
// Rows of dW per task when a dense layer's weight gradient is split over threads (dense_dw_rows): 16, or 32 where
// its weights (in x out floats) exceed 1 MB and do not stay in L2. Each task reads the whole batch's x^T from L2,
// and larger tasks read it half as often (the MNIST-CoreML-Training graph's 1152 -> 500 layer, x^T 590 KB: its
// training step on 2 threads faster in 11 of 15 interleaved pairs, medians about 1.5%; LeNet-5's, whose weights stay
// in L2, was no faster with 32, in 4 pairs).
inline int dense_dw_task_rows(int in, int out) {
    return size_t(in) * size_t(out) * sizeof(float) > (size_t(1) << 20) ? 32 : 16;
}
// Rows [o0, o0+rows) of dW [out][in] = dyT . x^T, one gemm_nn per panel of xP over the batch with no horizontal
// sums, and of db = the row sums of dyT (either may be null); added to dw/db when accumulate, else written. A row of
// dyT that is all 0 (a unit that passed no sample's gradient) gives a row of dW that is 0, without its products
// (dw_live_rows).
void dense_dw_rows(const KernelTable& k, int in, ptrdiff_t B, int o0, int rows, const float* xP, const float* dyT,
                   float* dw, float* db, bool accumulate);

// The rows of m [rows][n] (row stride ld) that hold a float other than +-0, in order, into `live`; true if all do.
bool live_rows(const float* m, int rows, int n, ptrdiff_t ld, std::vector<int>& live);

// Rows [o0, o0+rows) of a dense layer's dW [out][in] = dyT [out][B] . x^T, whose rows of dyT that are all 0 give rows
// of dW that are 0: products(a, m, c, add) writes (or adds, when add) the products of the m rows a [m][B] into
// c [m][in]. Where every row is live, that is all (into dw, added when accumulate). Else the live rows of dyT are
// gathered, their products computed into a scratch, and copied (or added) into dw's rows; the others are written 0
// (left as they are when accumulate).
template <class Products>
void dw_live_rows(int in, ptrdiff_t B, int o0, int rows, const float* dyT, float* dw, bool accumulate,
                  Products&& products) {
    thread_local std::vector<int> live;
    thread_local LineVector<float> gathered, part;
    const float* a = dyT + o0 * B;
    if (live_rows(a, rows, int(B), B, live)) return products(a, rows, dw + size_t(o0) * in, accumulate);
    gathered.resize(live.size() * size_t(B));
    part.resize(live.size() * size_t(in));
    for (size_t r = 0; r < live.size(); ++r)
        std::memcpy(gathered.data() + r * B, a + live[r] * B, size_t(B) * sizeof(float));
    const int m = int(live.size());
    if (m > 0) products(gathered.data(), m, part.data(), false);
    for (int r = 0, next = 0; r < rows; ++r) {
        float* row = dw + size_t(o0 + r) * in;
        if (next < m && live[size_t(next)] == r) {
            const float* src = part.data() + size_t(next++) * in;
            if (accumulate)
                for (int i = 0; i < in; ++i) row[i] += src[i];
            else
                std::memcpy(row, src, size_t(in) * sizeof(float));
        } else if (!accumulate) {
            std::memset(row, 0, size_t(in) * sizeof(float));
        }
    }
}

}  // namespace lenet::ops::block
