// Stride-1 2x2 convolutions at 16 lanes through Winograd's F(2x2, 2x2) (kernels.h: conv_pool_fwd_winograd,
// conv_winograd_fwd): 9 multiply-adds per channel pair and 2x2 output tile instead of 16. Fused with a 2x2 max
// pooling, a pooling window's four outputs are one tile, so the whole epilogue (output transform, bias, pooling,
// argmax, ReLU) runs on accumulators still in registers.
// AVX-512 only: one channel's 9 transformed products x 16 lanes are 9 registers there, and 3 channels (27
// accumulators) plus the input vector fill its 32; on AVX2's 16 registers a channel alone would not fit.
#pragma once
#include <stddef.h>

#include <cstring>

#include "../kernels.h"
#include "conv_direct.h"
#include "tile.h"

namespace lenet::simd {
namespace {

constexpr int kWinogradChannels = 3;  // output channels per register tile: 27 accumulators

// Output channels o0..o0+OC of output tile (ty, tx): m [OC][9] = sum over c of u [o][c][9] * tile [c][9] (each tile
// vector loaded once for the OC multiply-adds, u as broadcast memory operands), then per channel the output
// transform and bias, and either (POOL) the max, argmax and ReLU (store_pool_window), or the tile's outputs inside
// the image.
template <class V, int OC, bool POOL>
LENET_TILE_FUNCTION
void winograd_tile(const ConvShape* s, const float* tile, const float* u, const float* bias, float* y, float* argmax,
                   int o0, int ty, int tx, int relu) {
    constexpr int L = 16;
    typename V::T m[OC][9];
    LENET_TILE_LOOP for (int o = 0; o < OC; ++o)
        LENET_TILE_LOOP for (int i = 0; i < 9; ++i) m[o][i] = V::zero();
    const float* uo[OC];  // one pointer per channel: with one base and run-time strides, gcc ran out of registers
    LENET_TILE_LOOP for (int o = 0; o < OC; ++o) uo[o] = u + ptrdiff_t(o0 + o) * s->ic * 9;
    for (int c = 0; c < s->ic; ++c, tile += 9 * L) {
        LENET_TILE_LOOP for (int i = 0; i < 9; ++i) {
            typename V::T v = V::load(tile + i * L);
            V::keep_in_register(v);  // else gcc re-reads it as a memory operand of each FMA: twice the loads
            LENET_TILE_LOOP for (int o = 0; o < OC; ++o) m[o][i] = V::fmadd(V::set1(uo[o][i]), v, m[o][i]);
        }
        LENET_TILE_LOOP for (int o = 0; o < OC; ++o) uo[o] += 9;
    }
    LENET_TILE_LOOP for (int o = 0; o < OC; ++o) {
        typename V::T conv[4];
        winograd_output_tile(m[o], conv);
        const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
        LENET_TILE_LOOP for (int d = 0; d < 4; ++d) conv[d] = V::add(conv[d], b);
        if constexpr (POOL) {
            const ptrdiff_t at = ((ptrdiff_t(o0 + o) * (s->oh / 2) + ty) * (s->ow / 2) + tx) * L;
            store_pool_window<V>(conv[0], conv[1], conv[2], conv[3], relu, y + at, argmax ? argmax + at : nullptr);
        } else {
            LENET_TILE_LOOP for (int d = 0; d < 4; ++d) {
                const int oy = 2 * ty + d / 2, ox = 2 * tx + d % 2;
                if (oy < s->oh && ox < s->ow)
                    V::store(y + ((ptrdiff_t(o0 + o) * s->oh + oy) * s->ow + ox) * L, conv[d]);
            }
        }
    }
}

// Per output tile: its 3x3 input window of every input channel (rows and columns past xpad [ic][oh+1][ow+1][16] read
// as zero) transformed into `tile` [ic][9][16] (in L1 for the channel tiles that follow), then the output channels
// in tiles of kWinogradChannels. POOL: one tile per pooling window (oh/2 x ow/2), else ceil(oh/2) x ceil(ow/2).
template <class V, bool POOL>
void winograd_tiles(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                    float* argmax, int relu, float* tile) {
    constexpr int L = 16;
    const int th = POOL ? s->oh / 2 : (s->oh + 1) / 2, tw = POOL ? s->ow / 2 : (s->ow + 1) / 2;
    const int ph = s->oh + 1, pw = s->ow + 1;
    for (int ty = 0; ty < th; ++ty)
        for (int tx = 0; tx < tw; ++tx) {
            const int rows = ph - 2 * ty < 3 ? ph - 2 * ty : 3, cols = pw - 2 * tx < 3 ? pw - 2 * tx : 3;
            for (int c = 0; c < s->ic; ++c) {
                const float* p = xpad + ((ptrdiff_t(c) * ph + 2 * ty) * pw + 2 * tx) * L;
                typename V::T d[3][3], v[9];
                LENET_TILE_LOOP for (int r = 0; r < 3; ++r)
                    LENET_TILE_LOOP for (int q = 0; q < 3; ++q)
                        d[r][q] = r < rows && q < cols ? V::load(p + (r * pw + q) * L) : V::zero();
                winograd_input_tile(d, v);
                LENET_TILE_LOOP for (int i = 0; i < 9; ++i) V::store(tile + (c * 9 + i) * L, v[i]);
            }
            for (int o0 = 0; o0 < s->oc; o0 += kWinogradChannels)
                with_size<kWinogradChannels>(s->oc - o0 < kWinogradChannels ? s->oc - o0 : kWinogradChannels,
                                             [&](auto oc) {
                                                 winograd_tile<V, decltype(oc)::value, POOL>(s, tile, u, bias, y,
                                                                                             argmax, o0, ty, tx, relu);
                                             });
        }
}

// ---- F(2x2, 5x5), fused with the pooling (LeNet-5's second layer)

// The 6x6 input window at (2 ty, 2 tx) of every input channel of xpad [ic][oh+4][ow+4][16], transformed into tile
// [ic][6][6][16]: along the columns into the tile, then along its rows in place.
template <class V>
LENET_TILE_FUNCTION
void winograd5_input(const ConvShape* s, const float* xpad, int ty, int tx, float* tile) {
    constexpr int L = 16;
    const ptrdiff_t ph = s->oh + 4, pw = s->ow + 4;
    for (int c = 0; c < s->ic; ++c) {
        const float* p = xpad + ((c * ph + 2 * ty) * pw + 2 * tx) * L;
        float* t = tile + ptrdiff_t(c) * 36 * L;
        LENET_TILE_LOOP for (int q = 0; q < 6; ++q) {
            typename V::T d[6], v[6];
            LENET_TILE_LOOP for (int r = 0; r < 6; ++r) d[r] = V::load(p + (r * pw + q) * L);
            winograd5_input_line(d, v);
            LENET_TILE_LOOP for (int r = 0; r < 6; ++r) V::store(t + (r * 6 + q) * L, v[r]);
        }
        LENET_TILE_LOOP for (int r = 0; r < 6; ++r) {
            typename V::T d[6], v[6];
            LENET_TILE_LOOP for (int q = 0; q < 6; ++q) d[q] = V::load(t + (r * 6 + q) * L);
            winograd5_input_line(d, v);
            LENET_TILE_LOOP for (int q = 0; q < 6; ++q) V::store(t + (r * 6 + q) * L, v[q]);
        }
    }
}

// Output channels o0..o0+OC of pooling window (ty, tx), one row r of the 6x6 products at a time: m [OC][6] = the sum
// over c of u [o][c][r][.] * tile [c][r][.] (each tile vector loaded once for the OC multiply-adds, u as broadcast
// memory operands), transformed along the row at once and accumulated into the window's four convolution values
// (the transform along the columns, one row at a time); then bias, pooling, argmax and ReLU (store_pool_window).
constexpr int kWinograd5Channels = 2;  // 12 product and 8 window accumulators

template <class V, int OC>
LENET_TILE_FUNCTION
void winograd5_pool_tile(const ConvShape* s, const float* tile, const float* u, const float* bias, float* y,
                         float* argmax, int o0, int ty, int tx, int relu) {
    constexpr int L = 16;
    using T = typename V::T;
    T conv[OC][4];  // window position d = 2 * row + column
    const float* uo[OC];
    LENET_TILE_LOOP for (int o = 0; o < OC; ++o) uo[o] = u + ptrdiff_t(o0 + o) * s->ic * 36;
    LENET_TILE_LOOP for (int r = 0; r < 6; ++r) {
        T m[OC][6];
        LENET_TILE_LOOP for (int o = 0; o < OC; ++o)
            LENET_TILE_LOOP for (int q = 0; q < 6; ++q) m[o][q] = V::zero();
        const float* t = tile + r * 6 * L;
        for (int c = 0; c < s->ic; ++c, t += 36 * L)
            LENET_TILE_LOOP for (int q = 0; q < 6; ++q) {
                T v = V::load(t + q * L);
                V::keep_in_register(v);
                LENET_TILE_LOOP for (int o = 0; o < OC; ++o)
                    m[o][q] = V::fmadd(V::set1(uo[o][c * 36 + r * 6 + q]), v, m[o][q]);
            }
        LENET_TILE_LOOP for (int o = 0; o < OC; ++o) {
            T line[2];  // this row's share of output columns 0 and 1, then along the column into rows 0 and 1
            winograd5_output_line(m[o], line);
            LENET_TILE_LOOP for (int b = 0; b < 2; ++b) winograd5_output_step(r, line[b], conv[o][b], conv[o][2 + b]);
        }
    }
    LENET_TILE_LOOP for (int o = 0; o < OC; ++o) {
        const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
        const ptrdiff_t at = ((ptrdiff_t(o0 + o) * (s->oh / 2) + ty) * (s->ow / 2) + tx) * L;
        store_pool_window<V>(V::add(conv[o][0], b), V::add(conv[o][1], b), V::add(conv[o][2], b),
                             V::add(conv[o][3], b), relu, y + at, argmax ? argmax + at : nullptr);
    }
}

template <class V>
void winograd5_pool_tiles(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                          float* argmax, int relu, float* tile) {
    for (int ty = 0; ty < s->oh / 2; ++ty)
        for (int tx = 0; tx < s->ow / 2; ++tx) {
            winograd5_input<V>(s, xpad, ty, tx, tile);
            for (int o0 = 0; o0 < s->oc; o0 += kWinograd5Channels)
                with_size<kWinograd5Channels>(s->oc - o0 < kWinograd5Channels ? s->oc - o0 : kWinograd5Channels,
                                              [&](auto oc) {
                                                  winograd5_pool_tile<V, decltype(oc)::value>(s, tile, u, bias, y,
                                                                                              argmax, o0, ty, tx, relu);
                                              });
        }
}

template <class V>
void conv_pool_fwd_winograd(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                            float* argmax, int relu, float* tile) {
    if (s->kh == 5) winograd5_pool_tiles<V>(s, xpad, u, bias, y, argmax, relu, tile);
    else winograd_tiles<V, true>(s, xpad, u, bias, y, argmax, relu, tile);
}
template <class V>
void conv_winograd_fwd(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                       float* tile) {
    winograd_tiles<V, false>(s, xpad, u, bias, y, nullptr, 0, tile);
}

// ---- F(2x2, 5x5) backwards: the input gradient of a fused layer (conv_pool_dx_winograd), where the pooling's
// sparsity does not take it (a kernel row of 7 or more input channels: more than two vectors)

// dv [c0..c0+CB][36] = the sum over output channels of u [o][c][.] * dm [o][.], in register tiles of CB input
// channels x 4 positions (each dm vector loaded once for the CB multiply-adds, u as broadcast memory operands).
constexpr int kWinograd5DxChannels = 6;  // x 4 positions: 24 accumulators
template <class V, int CB>
LENET_TILE_FUNCTION
void winograd5_dx_products(const ConvShape* s, const float* dm, const float* u, float* dv, int c0) {
    constexpr int L = 16, P = 4;
    using T = typename V::T;
    for (int i0 = 0; i0 < 36; i0 += P) {
        T acc[CB][P];
        LENET_TILE_LOOP for (int c = 0; c < CB; ++c)
            LENET_TILE_LOOP for (int p = 0; p < P; ++p) acc[c][p] = V::zero();
        const float* uo = u + ptrdiff_t(c0) * 36 + i0;  // u [o][c][36]
        const float* m = dm + ptrdiff_t(i0) * L;
        for (int o = 0; o < s->oc; ++o, uo += ptrdiff_t(s->ic) * 36, m += 36 * L)
            LENET_TILE_LOOP for (int p = 0; p < P; ++p) {
                T v = V::load(m + p * L);
                V::keep_in_register(v);
                LENET_TILE_LOOP for (int c = 0; c < CB; ++c)
                    acc[c][p] = V::fmadd(V::set1(uo[c * 36 + p]), v, acc[c][p]);
            }
        LENET_TILE_LOOP for (int c = 0; c < CB; ++c)
            LENET_TILE_LOOP for (int p = 0; p < P; ++p) V::store(dv + ((c0 + c) * 36 + i0 + p) * L, acc[c][p]);
    }
}

// Per pooling window: the products' gradient of every output channel into work [oc][36][16], the transformed input's
// gradient of every input channel after it [ic][36][16], that transformed along its rows in place and then along its
// columns, straight into the window of dx.
template <class V>
void conv_pool_dx_winograd(const ConvShape* s, const float* g, int bh, int bw, const float* u, float* dx,
                           float* work) {
    constexpr int L = 16;
    using T = typename V::T;
    const ptrdiff_t gh = s->oh + 2 * bh, gw = s->ow + 2 * bw, ih = s->ih, iw = s->iw;
    float* dm = work;
    float* dv = work + ptrdiff_t(s->oc) * 36 * L;
    std::memset(dx, 0, sizeof(float) * size_t(s->ic) * size_t(ih * iw) * L);
    for (int ty = 0; ty < s->oh / 2; ++ty)
        for (int tx = 0; tx < s->ow / 2; ++tx) {
            for (int o = 0; o < s->oc; ++o) {
                const float* p = g + ((o * gh + bh + 2 * ty) * gw + bw + 2 * tx) * L;
                const T gt[4] = {V::load(p), V::load(p + L), V::load(p + gw * L), V::load(p + (gw + 1) * L)};
                T v[36];
                winograd5_grad_tile(gt, v);
                LENET_TILE_LOOP for (int i = 0; i < 36; ++i) V::store(dm + (o * 36 + i) * L, v[i]);
            }
            int c0 = 0;
            for (; c0 + kWinograd5DxChannels <= s->ic; c0 += kWinograd5DxChannels)
                winograd5_dx_products<V, kWinograd5DxChannels>(s, dm, u, dv, c0);
            for (; c0 < s->ic; ++c0) winograd5_dx_products<V, 1>(s, dm, u, dv, c0);
            for (int c = 0; c < s->ic; ++c) {
                float* t = dv + ptrdiff_t(c) * 36 * L;
                LENET_TILE_LOOP for (int i = 0; i < 6; ++i) {
                    T v[6], x[6];
                    LENET_TILE_LOOP for (int j = 0; j < 6; ++j) v[j] = V::load(t + (i * 6 + j) * L);
                    winograd5_input_line_t(v, x);
                    LENET_TILE_LOOP for (int j = 0; j < 6; ++j) V::store(t + (i * 6 + j) * L, x[j]);
                }
                float* window = dx + ((c * ih + 2 * ty) * iw + 2 * tx) * L;
                LENET_TILE_LOOP for (int q = 0; q < 6; ++q) {
                    T v[6], x[6];
                    LENET_TILE_LOOP for (int i = 0; i < 6; ++i) v[i] = V::load(t + (i * 6 + q) * L);
                    winograd5_input_line_t(v, x);
                    LENET_TILE_LOOP for (int r = 0; r < 6; ++r) {
                        float* at = window + (r * iw + q) * L;
                        V::store(at, V::add(V::load(at), x[r]));
                    }
                }
            }
        }
}

// The table's slots: the kernels where the ISA has them, else null.
template <class V> constexpr decltype(KernelTable::conv_pool_fwd_winograd) winograd_pool_slot() {
    if constexpr (has_winograd<V>()) return conv_pool_fwd_winograd<V>;
    else return nullptr;
}
template <class V> constexpr decltype(KernelTable::conv_winograd_fwd) winograd_conv_slot() {
    if constexpr (has_winograd<V>()) return conv_winograd_fwd<V>;
    else return nullptr;
}

template <class V> constexpr decltype(KernelTable::conv_pool_dx_winograd) winograd_dx_slot() {
    if constexpr (has_winograd<V>()) return conv_pool_dx_winograd<V>;
    else return nullptr;
}

}  // namespace
}  // namespace lenet::simd
