// The microkernel table: one struct of function pointers per instruction set.
// Every slot has a plain-loop reference (kernels/ref/) that is also the fallback; SIMD tables are built from
// the templates in kernels/simd/ once per ISA. Microkernels are single-threaded and allocate nothing: the
// ops layer (csrc/ops/) splits work across threads and hands them scratch.
//
// Activation layout ("lanes"): a batch is stored as blocks of L samples with the samples innermost,
// [nblk][C][H][W][L]. L = 16 in training (one AVX-512 register, two AVX2, four NEON), L = 1 gives plain NCHW.
// Inside one block an activation is a row-major matrix [C][H*W*L], which is what im2col + GEMM produce directly.
//
// This header is included by ISA-specific translation units: it must stay free of inline functions with external
// linkage and of C++ standard library headers (an inline function compiled with -mavx512f may be kept by the linker for
// every caller and crash a CPU without AVX-512).
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace lenet {

// Shape of one 2-D convolution or pooling window applied to one block.
struct ConvShape {
    int ic, ih, iw;      // input channels, height, width
    int oc, oh, ow;      // output channels, height, width
    int kh, kw;          // window
    int sh, sw;          // stride
    int ph, pw;          // zero padding (top/bottom, left/right)
    int lanes;           // L: samples per block
};

// Pooling windows that cover every input element exactly once. (static: internal linkage in every translation
// unit, so no ISA-specific copy can be shared.)
static inline bool pool_windows_tile(const ConvShape* s) {
    return s->kh == s->sh && s->kw == s->sw && s->oh * s->kh == s->ih && s->ow * s->kw == s->iw;
}

// An 8-bit pixel's value: v / 255 as a float32 division, the same as numpy's images.astype(float32) / 255 (every
// pack of uint8 samples: pack_u8_16 below, and ops/pack.cpp's table for partial blocks).
static inline float pixel_value(uint8_t v) { return float(v) / 255.0f; }

// Convolution weights w [oc][ic][kh][kw] regrouped channels-last: w_cl [ic][kh][kw][oc], so that the weights of
// one tap for every output channel are contiguous (for kernels vectorised along the output channels).
static inline void conv_weights_channels_last(const ConvShape* s, const float* w, float* w_cl) {
    const int taps = s->ic * s->kh * s->kw;
    for (int o = 0; o < s->oc; ++o)
        for (int t = 0; t < taps; ++t) w_cl[t * s->oc + o] = w[o * taps + t];
}

// Winograd F(2x2, 2x2) (conv_pool_fwd_winograd): 2x2 weights w [oc][ic][2][2] -> u [oc][ic][3][3] = G w G^T with
// G = [1 0; 1 1; 0 1].
static inline void winograd_2x2_weights(int oc, int ic, const float* w, float* u) {
    for (ptrdiff_t p = 0; p < ptrdiff_t(oc) * ic; ++p, w += 4, u += 9) {
        const float a = w[0], b = w[1], c = w[2], d = w[3];
        u[0] = a, u[1] = a + b, u[2] = b;
        u[3] = a + c, u[4] = (a + b) + (c + d), u[5] = b + d;
        u[6] = c, u[7] = c + d, u[8] = d;
    }
}
// The scratch of one transformed input tile, [ic][k+1][k+1][16], for k x k kernels (2 or 5).
static inline ptrdiff_t winograd_tile_floats(int ic, int k) { return ptrdiff_t(ic) * (k + 1) * (k + 1) * 16; }
// Its input transform, v = B^T d B with B^T = [1 -1 0; 0 1 0; 0 -1 1], and output transform, y = A^T m A with
// A^T = [1 1 0; 0 1 1], over floats or GCC vectors (one order of operations for the reference and every ISA).
template <class T>
static inline void winograd_input_tile(const T d[3][3], T v[9]) {
    for (int r = 0; r < 3; ++r) {
        const T t0 = r == 0 ? d[0][0] - d[1][0] : r == 1 ? d[1][0] : d[2][0] - d[1][0];
        const T t1 = r == 0 ? d[0][1] - d[1][1] : r == 1 ? d[1][1] : d[2][1] - d[1][1];
        const T t2 = r == 0 ? d[0][2] - d[1][2] : r == 1 ? d[1][2] : d[2][2] - d[1][2];
        v[3 * r] = t0 - t1, v[3 * r + 1] = t1, v[3 * r + 2] = t2 - t1;
    }
}
template <class T>
static inline void winograd_output_tile(const T m[9], T y[4]) {
    T r0[3], r1[3];
    for (int j = 0; j < 3; ++j) r0[j] = m[j] + m[3 + j], r1[j] = m[3 + j] + m[6 + j];
    y[0] = r0[0] + r0[1], y[1] = r0[1] + r0[2], y[2] = r1[0] + r1[1], y[3] = r1[1] + r1[2];
}

// Winograd F(2x2, 5x5), the interpolation points 0, 1, -1, 2, -2 and infinity (6x6 tiles, 36 multiply-adds per
// channel pair and 2x2 output tile instead of 100): 5x5 weights w [oc][ic][5][5] -> u [oc][ic][6][6] = G w G^T with
// G = [1/4 0 0 0 0; -1/6 -1/6 -1/6 -1/6 -1/6; -1/6 1/6 -1/6 1/6 -1/6; 1/24 1/12 1/6 1/3 2/3;
//      1/24 -1/12 1/6 -1/3 2/3; 0 0 0 0 1], computed in double and rounded once.
void winograd_5x5_weights(int oc, int ic, const float* w, float* u);  // (defined once, in conv_ref.cpp)
// Its input transform along one line of six, v = B^T d with B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
// 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1] (every product by a power of 2, exact, so that a fused multiply-add
// rounds as the separate operations do: one result on every ISA), over floats or GCC vectors; the 2D transform
// B^T d B is this along the columns, then along the rows.
template <class T>
static inline void winograd5_input_line(const T d[6], T v[6]) {
    const T a = d[4] - T(4.0f * d[2]), b = d[3] - T(4.0f * d[1]);  // v1, v2 = a +- b
    const T c = d[4] - d[2], e = T(2.0f * (d[3] - d[1]));          // v3, v4 = c +- e
    v[0] = (T(4.0f * d[0]) - T(4.0f * d[2])) + (d[4] - d[2]);
    v[1] = a + b, v[2] = a - b, v[3] = c + e, v[4] = c - e;
    v[5] = (T(4.0f * d[1]) - T(4.0f * d[3])) + (d[5] - d[3]);
}
// The 2D transform of one 6x6 window d [row][column]: along the columns, then along the rows.
template <class T>
static inline void winograd5_input_tile(const T d[6][6], T v[36]) {
    T e[6][6];  // e = B^T d
    for (int q = 0; q < 6; ++q) {
        T column[6], out[6];
        for (int r = 0; r < 6; ++r) column[r] = d[r][q];
        winograd5_input_line(column, out);
        for (int r = 0; r < 6; ++r) e[r][q] = out[r];
    }
    for (int r = 0; r < 6; ++r) winograd5_input_line(e[r], v + 6 * r);
}
// Its output transform along one line of six, y = A^T m with A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 1], in the order of a
// sum that takes m[0], m[1], ... one at a time (the AVX-512 tile's, which accumulates a line per row of products).
template <class T>
static inline void winograd5_output_line(const T m[6], T y[2]) {
    y[0] = (((m[0] + m[1]) + m[2]) + m[3]) + m[4];
    y[1] = (((m[1] - m[2]) + T(2.0f * m[3])) - T(2.0f * m[4])) + m[5];
}
// The same two sums one term at a time, for the terms of a line that arrive one after another in order (r = 0..5):
// y0 and y1 are set by their first term, so after r = 5 they hold winograd5_output_line's y[0] and y[1], bit for bit.
template <class T>
static inline void winograd5_output_step(int r, T m, T& y0, T& y1) {
    if (r == 0) y0 = m;
    else if (r < 5) y0 = y0 + m;
    if (r == 1) y1 = m;
    else if (r == 2) y1 = y1 - m;
    else if (r == 3) y1 = y1 + T(2.0f * m);
    else if (r == 4) y1 = y1 - T(2.0f * m);
    else if (r == 5) y1 = y1 + m;
}
// The 2D transform of the 6x6 products m [row][column] into the 2x2 tile y (row-major): along the rows, then along
// the columns.
template <class T>
static inline void winograd5_output_tile(const T m[36], T y[4]) {
    T t[2][6];  // t [b][r]: row r's share of output column b
    for (int r = 0; r < 6; ++r) {
        T line[2];
        winograd5_output_line(m + 6 * r, line);
        t[0][r] = line[0], t[1][r] = line[1];
    }
    for (int b = 0; b < 2; ++b) {
        T column[2];
        winograd5_output_line(t[b], column);
        y[b] = column[0], y[2 + b] = column[1];
    }
}

// F(2x2, 5x5) backwards (conv_pool_dx_winograd): the gradient of the window's four values g (row-major) becomes the
// products' gradient A g A^T (6x6), and that of the transformed input, dv, the input window's gradient B dv B^T.
// Along one line: v = A g with A = [1 0; 1 1; 1 -1; 1 2; 1 -2; 0 1] (A^T's transpose), and x = B v with B = B^T's
// transpose; every product by a power of 2, as above.
template <class T>
static inline void winograd5_grad_line(const T g[2], T v[6]) {
    const T twice = T(2.0f * g[1]);
    v[0] = g[0], v[1] = g[0] + g[1], v[2] = g[0] - g[1], v[3] = g[0] + twice, v[4] = g[0] - twice, v[5] = g[1];
}
template <class T>
static inline void winograd5_input_line_t(const T v[6], T x[6]) {
    const T s12 = v[1] + v[2], d12 = v[1] - v[2], s34 = v[3] + v[4], d34 = v[3] - v[4];
    const T head = v[0] + s12;  // v0 + v1 + v2
    x[0] = T(4.0f * v[0]);
    x[1] = T(4.0f * (v[5] - d12)) - T(2.0f * d34);
    x[2] = -(T(4.0f * head) + (v[0] + s34));
    x[3] = (d12 + T(2.0f * d34)) - (T(4.0f * v[5]) + v[5]);
    x[4] = head + s34;
    x[5] = v[5];
}
// The 2D forms, g [2][2] -> v [6][6] and v [6][6] -> x [6][6] (row-major): along the rows, then along the columns.
template <class T>
static inline void winograd5_grad_tile(const T g[4], T v[36]) {
    T h[2][6];  // g A^T
    for (int a = 0; a < 2; ++a) winograd5_grad_line(g + 2 * a, h[a]);
    for (int j = 0; j < 6; ++j) {
        const T column[2] = {h[0][j], h[1][j]};
        T out[6];
        winograd5_grad_line(column, out);
        for (int i = 0; i < 6; ++i) v[6 * i + j] = out[i];
    }
}
template <class T>
static inline void winograd5_input_tile_t(const T v[36], T x[36]) {
    T h[6][6];  // rows transformed
    for (int i = 0; i < 6; ++i) winograd5_input_line_t(v + 6 * i, h[i]);
    for (int q = 0; q < 6; ++q) {
        T column[6], out[6];
        for (int i = 0; i < 6; ++i) column[i] = h[i][q];
        winograd5_input_line_t(column, out);
        for (int r = 0; r < 6; ++r) x[6 * r + q] = out[r];
    }
}
// conv_pool_dx_winograd's scratch: the products' gradient of every output channel and the transformed input's
// gradient of every input channel, of one window.
static inline ptrdiff_t winograd5_dx_work_floats(const ConvShape* s) { return ptrdiff_t(s->oc + s->ic) * 36 * 16; }

// The fused convolution + 2x2 max pooling's backward through the pooling's sparsity (conv_pool_bwd_sparse): the
// shapes it takes, and the layout of its scratch, in floats from its start (total: how many it needs). 16 lanes,
// stride 1, and either at most 5 kernel rows, each across all input channels (kw * ic floats, contiguous in the
// channels-last input) more than one vector and at most two (LeNet-5's second layer: 5 rows of 5 x 6 floats), or 2x2
// kernels over 32 input channels (the MNIST-CoreML-Training graph's second layer: 2 rows of 2 x 32 floats, four
// vectors). With dx, no padding. Rows of one vector or less stay with the direct kernels, which were faster there
// (dW of one block on one thread, AVX-512, AMD Zen 4: LeNet-5's first layer, 5 floats a row, 46 us direct against
// 74 us; the MNIST-CoreML-Training graph's first, 3 floats, 74 against 127; LeNet-5's second, 30 floats, 86 against
// 42).
static inline int conv_pool_sparse_row_vectors(const ConvShape* s) {  // 0: not taken
    if (s->lanes != 16 || s->sh != 1 || s->sw != 1 || s->oh < 2 || s->ow < 2 || s->kh < 1) return 0;
    const int row = s->kw * s->ic;
    if (row > 16 && row <= 32 && s->kh <= 5) return 2;
    return s->kh == 2 && s->kw == 2 && s->ic == 32 ? 4 : 0;
}
static inline bool conv_pool_sparse_shape(const ConvShape* s, bool with_dx) {
    return conv_pool_sparse_row_vectors(s) > 0 && !(with_dx && (s->ph || s->pw));
}
struct ConvPoolSparseWork {
    ptrdiff_t windows;   // (oh/2) (ow/2) pooling windows per channel
    ptrdiff_t entries;   // (channel, window) pairs, oc * windows rounded up to 16 (whole 16x16 transposes)
    ptrdiff_t sample;    // one sample's input with its border, channels-last: [oh+kh-1][ow+kw-1][ic]
    ptrdiff_t row;       // floats of a kernel row in dW's and the weights' registers: 16 x conv_pool_sparse_row_vectors
    // x and dx channels-last, [L][sample] each, then a kernel row read (and, times zero weights, added) past the last
    // sample's end by the vectors' unused lanes
    ptrdiff_t xcl, dxcl;
    ptrdiff_t at, gw;     // per (channel, window) and lane: the winner's offset in xcl and its gradient, [entries][L]
    ptrdiff_t at_l, gw_l;  // the same per sample, [L][entries]
    ptrdiff_t at_nz, gw_nz;  // one (sample, channel)'s nonzero gradients and their offsets, windows + 16 each
    ptrdiff_t wcl, dwcl;  // the weights and dW by kernel row, [oc][kh][row]: column kx of input channel c at kx ic + c
    ptrdiff_t total;
};
static inline ConvPoolSparseWork conv_pool_sparse_work(const ConvShape* s) {
    ConvPoolSparseWork w{};
    w.windows = ptrdiff_t(s->oh / 2) * (s->ow / 2);
    w.entries = (ptrdiff_t(s->oc) * w.windows + 15) / 16 * 16;
    w.sample = ptrdiff_t(s->oh + s->kh - 1) * (s->ow + s->kw - 1) * s->ic;
    w.row = 16 * ptrdiff_t(conv_pool_sparse_row_vectors(s));
    const ptrdiff_t image = s->lanes * w.sample + w.row, table = w.entries * s->lanes;
    const ptrdiff_t weights = ptrdiff_t(s->oc) * s->kh * w.row;
    w.xcl = 0, w.dxcl = w.xcl + image;
    w.at = w.dxcl + image, w.gw = w.at + table, w.at_l = w.gw + table, w.gw_l = w.at_l + table;
    w.at_nz = w.gw_l + table, w.gw_nz = w.at_nz + w.windows + 16;
    w.wcl = w.gw_nz + w.windows + 16, w.dwcl = w.wcl + weights;
    w.total = w.dwcl + weights;
    return w;
}

struct KernelTable {
    const char* isa;     // "reference", "avx2", "avx512", "neon"
    int vector_floats;   // floats per vector register (1 for the reference)

    // C[M][N] (+)= A[M][K] * B[K][N]. A is read as A[m*rsa + k*csa] (so A^T is csa=M-stride swap);
    // B and C are row-major with leading dimensions ldb, ldc. accumulate=0 overwrites C. ks (may be null): the sum
    // runs over k = ks[0], ..., ks[K-1] only, in that order (a dense layer skips the rows of B that are all zero:
    // block::gemm_nn_live_rows); null: over k < K.
    void (*gemm_nn)(int M, int N, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                    const float* B, ptrdiff_t ldb, float* C, ptrdiff_t ldc, int accumulate, const int* ks);
    // C[M][N] (+)= sum_k A[m][k] * B[n][k]: dot products along rows (weight gradients).
    void (*gemm_nt)(int M, int N, int K, const float* A, ptrdiff_t lda,
                    const float* B, ptrdiff_t ldb, float* C, ptrdiff_t ldc, int accumulate);

    // Shape-specialised direct convolution, forward, one block: stride 1, lanes L == 16 (the samples in the
    // vector lanes) or L == 1 (one sample, vectorised along the output row), input already zero-padded to
    // [ic][oh+kh-1][ow+kw-1][L] (s->ph rows of zeros above the s->ih image rows, which a kernel may skip);
    // w is [oc][ic][kh][kw]; y[oc][oh][ow][L] = bias + conv. w_cl: the same weights channels-last
    // (conv_weights_channels_last below), which the one-sample path vectorised along the output channels reads; null:
    // that path regroups w itself, on every call.
    // Null where the ISA has none (the ops layer then uses im2col + gemm_nn).
    void (*conv_direct_fwd)(const ConvShape* s, const float* xpad, const float* w, const float* w_cl, const float* bias,
                            float* y);
    // Its weight gradient, one block: dw[oc][ic][kh][kw] = sum over pixels and lanes of dy * xpad (overwritten);
    // the lanes are the reduction, one horizontal sum per weight. dy [oc][oh][ow][L] is read inside a border of bh
    // rows and bw columns, dy [oc][oh+2bh][ow+2bw][L] (the zero-padded gradient that the input gradient's
    // convolution reads: conv_pool_route writes it there), or of none. Null where the ISA has none.
    void (*conv_direct_dw)(const ConvShape* s, const float* xpad, const float* dy, int bh, int bw, float* dw);
    // Stride 1, input pre-padded as for conv_direct_fwd, lanes 1 (one sample) or 16: the convolution (plus bias),
    // then a 2x2 stride-2 max pooling, then a ReLU when relu != 0, in one pass that never writes the convolution's
    // output: y [oc][oh/2][ow/2][L] (s: the convolution's shape; an odd last row or column is dropped, as the
    // pooling drops it). argmax (16 lanes only; may be null) [oc][oh/2][ow/2][L], for the backward pass: which
    // position of its window, 0-3 in row-major order, gave each output (the first maximum), or -1 where the ReLU
    // zeroed it (relu and a maximum <= 0), so that no position gets a gradient. w_cl as above.
    void (*conv_pool_fwd)(const ConvShape* s, const float* xpad, const float* w, const float* w_cl, const float* bias,
                          float* y, float* argmax, int relu);
    // The same for 2x2 or 5x5 kernels at 16 lanes through Winograd's F(2x2, 2x2) or F(2x2, 5x5): each pooling
    // window's four convolution outputs come from one 3x3 (6x6) input tile with 9 (36) multiply-adds per channel pair
    // instead of 16 (100); the output transform, bias, pooling, argmax and ReLU follow in registers. u: the weights
    // transformed by winograd_2x2_weights (winograd_5x5_weights); tile: winograd_tile_floats(ic, kh) floats of
    // scratch. The sums round differently from conv_pool_fwd's (within a few ulps of the window's magnitude for 2x2;
    // for 5x5 about 1e-6 of it). Null where the ISA has none.
    void (*conv_pool_fwd_winograd)(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                                   float* argmax, int relu, float* tile);
    // conv_direct_fwd for 2x2 kernels at 16 lanes through Winograd's F(2x2, 2x2) (u, tile as above; bias may be null):
    // y [oc][oh][ow][L] in 2x2 tiles, of which an odd last row or column is cut. Null where the ISA has none.
    void (*conv_winograd_fwd)(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                              float* tile);
    // The input gradient of such a fused layer with 5x5 kernels at 16 lanes, unpadded, through F(2x2, 5x5)
    // backwards: per pooling window, its four values' gradient g (conv_pool_route's, [oc][oh+2bh][ow+2bw][L] inside a
    // border of bh rows and bw columns) into the products' gradient (winograd5_grad_tile) per output channel; times u
    // (as for the forward) summed over the output channels; that back into the window's 6x6 input gradient
    // (winograd5_input_tile_t), added into dx [ic][ih][iw][L] (overwritten; windows in row-major order).
    // work: winograd5_dx_work_floats(s) floats of scratch. Null where the ISA has none.
    void (*conv_pool_dx_winograd)(const ConvShape* s, const float* g, int bh, int bw, const float* u, float* dx,
                                  float* work);
    // Its weight and bias gradients, 16 lanes (a first layer, which needs no input gradient): dw [oc][ic][kh][kw]
    // and db [oc] (overwritten; either may be null) from the pooled output's gradient dy and the forward pass's
    // argmax (both [oc][oh/2][ow/2][L]): dy reaches the convolution only at the argmax position of its window (none
    // where argmax is -1). The convolution's full-size gradient is never stored.
    void (*conv_pool_dw)(const ConvShape* s, const float* xpad, const float* argmax, const float* dy, float* dw,
                         float* db);
    // The convolution's full-size gradient, 16 lanes (for a layer that also needs its input gradient): g [oc][oh][ow]
    // [L] = dy at the window position argmax names, 0 elsewhere and on an odd last row or column (overwritten),
    // inside a border of bh rows and bw columns, g [oc][oh+2bh][ow+2bw][L], that is left as it is.
    void (*conv_pool_route)(const ConvShape* s, const float* argmax, const float* dy, float* g, int bh, int bw);
    // The same layer's backward where conv_pool_sparse_shape(s, dx != null): each pooled gradient reaches one
    // convolution output, the window position argmax names (none where it is -1), so dW, db and dX are sums over
    // those alone, a quarter of the convolution's outputs (and none where the ReLU zeroed the window), taken one
    // sample at a time, each gradient times a kernel row of all input channels per vector (x and dx channels-last in
    // work, laid out by conv_pool_sparse_work; the reference ignores it). xpad as for conv_pool_dw, w [oc][ic][kh][kw]
    // (read only with dx), argmax and dy [oc][oh/2][ow/2][L] -> dw [oc][ic][kh][kw], db [oc] and dx [ic][ih][iw][L]
    // (each may be null), overwritten. Null where the ISA has none (the ops layer then routes dy into the
    // convolution's full-size gradient: conv_pool_route).
    void (*conv_pool_bwd_sparse)(const ConvShape* s, const float* xpad, const float* w, const float* argmax,
                                 const float* dy, float* dw, float* db, float* dx, float* work);

    // Pooling over one block [c][ih][iw][L] -> [c][oh][ow][L] (no padding). With relu != 0 max pooling is fused
    // with a ReLU (max and ReLU commute: relu(maxpool(x)) == maxpool(relu(x))), saving a pass over x.
    void (*maxpool_fwd)(const ConvShape* s, const float* x, float* y, int relu);
    // dx (+)= dy routed to the first maximum of each window, where y > 0 if relu. When the windows tile the input
    // exactly (kernel == stride, no remainder) every dx element is written once; otherwise dx is accumulated into
    // and must be zeroed by the caller (see pool_windows_tile).
    void (*maxpool_bwd)(const ConvShape* s, const float* x, const float* y, const float* dy, float* dx, int relu);
    void (*avgpool_fwd)(const ConvShape* s, const float* x, float* y);
    void (*avgpool_bwd)(const ConvShape* s, const float* dy, float* dx);  // dx (+)= dy / (kh*kw), same rule

    // y[c][p] += b[c] for a [C][P] matrix; db[c] += sum_p dy[c][p].
    void (*bias_add)(int C, ptrdiff_t P, const float* b, float* y);
    void (*bias_grad)(int C, ptrdiff_t P, const float* dy, float* db);
    // A dense layer's gathers for its batch-wide weight gradient (ops/block.h: dense_backward): x [in][L] transposed
    // into samples [col0, col0 + L) of xP's panels (xP [ceil(in / P)][B][P], sample b's feature i at
    // (i - i % P) * B + b * P + i % P; P a multiple of 16), and dy [out][L] into columns [col0, col0 + L) of dyT
    // [out][B]; either may be null. stream: write them with stores that bypass the caches where whole aligned vectors
    // allow (other threads read both in the step's weight-gradient pass); the values are the same.
    void (*dense_gather)(int L, int in, int out, ptrdiff_t col0, ptrdiff_t B, int P, const float* x, const float* dy,
                         float* xP, float* dyT, int stream);

    // Elementwise over n floats. Backward takes the forward output y.
    void (*relu_fwd)(ptrdiff_t n, const float* x, float* y);
    void (*relu_bwd)(ptrdiff_t n, const float* y, const float* dy, float* dx);
    void (*tanh_fwd)(ptrdiff_t n, const float* x, float* y);
    void (*tanh_bwd)(ptrdiff_t n, const float* y, const float* dy, float* dx);

    // Softmax cross-entropy over one block: logits [K][L], label[l] in [0,K) or -1 for a padding lane.
    // loss[l] = logsumexp - logit[label] (0 for padding lanes); dlogits = (softmax - onehot) * scale.
    void (*softmax_xent)(int K, int L, const float* logits, const int32_t* label, float scale,
                         float* loss, float* dlogits);

    // Optimiser updates over n parameters (flat buffers). stream: write w with stores that bypass the caches, where
    // the ISA has them (the weights other threads have read: simd/eltwise.h's update_chunks); the values are the same.
    // SGD: g' = g + wd*w; v = momentum*v + g'; w -= lr * (nesterov ? g' + momentum*v : v).
    void (*sgd_update)(ptrdiff_t n, float* w, const float* g, float* v, float lr, float momentum, float wd,
                       int nesterov, int stream);
    // Adam (L2 weight decay added to g): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    // w -= lr_t * m / (sqrt(v) + eps_t), where lr_t, eps_t fold in the bias corrections for step t.
    void (*adam_update)(ptrdiff_t n, float* w, const float* g, float* m, float* v, float lr, float b1,
                        float b2, float eps, float wd, int step, int stream);

    // Sixteen samples' 8-bit pixels side by side (a block's input): out [F][16], pixel f of sample l at f * 16 + l,
    // = pixel_value(src[l][f]).
    void (*pack_u8_16)(size_t F, const uint8_t* const* src, float* out);

    // A loop of independent FMAs, enough accumulators to fill every FMA pipe: the ISA's measured peak. Returns
    // the FLOPs done (multiply-add = 2); writes a result to *sink so the work cannot be optimised away.
    double (*fma_loop)(int64_t iters, float* sink);

    // Names of the microkernels, for lenet.kernels().
    const char* gemm_nn_name;
    const char* gemm_nt_name;
    const char* conv_direct_name;
    const char* conv_direct_dw_name;
    const char* conv_pool_name;
    const char* conv_pool_winograd_name;  // null where the slot is
    const char* conv_winograd_name;       // null where the slot is
    const char* conv_pool_dx_winograd_name;  // null where the slot is
    const char* conv_pool_sparse_name;    // null where the slot is
};

// One table per ISA compiled into this build; null where the build target cannot have it.
extern const KernelTable kTableReference;
const KernelTable* table_avx2();     // null unless built for x86-64
const KernelTable* table_avx512();   // null unless built for x86-64
const KernelTable* table_neon();     // null unless built for ARM

}  // namespace lenet
