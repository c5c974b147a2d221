// Fused 2x2 convolution + 2x2 max pooling at 16 lanes through Winograd's F(2x2, 2x2) (kernels.h:
// conv_pool_fwd_winograd): a pooling window's four convolution outputs are one Winograd output tile, so the whole
// epilogue (output transform, bias, pooling, argmax, ReLU) runs on accumulators still in registers.
// AVX-512 only: one channel's 9 transformed products x 16 lanes are 9 registers there, and 3 channels (27
// accumulators) plus the input vector fill its 32; on AVX2's 16 registers a channel alone would not fit.
#pragma once
#include <stddef.h>

#include "../kernels.h"
#include "tile.h"

namespace lenet::simd {
namespace {

template <class V> constexpr bool has_winograd_pool() { return V::W == 16; }  // AVX-512
constexpr int kWinogradChannels = 3;  // output channels per register tile: 27 accumulators

// Output channels o0..o0+OC of one pooling window (py, px): m [OC][9] = sum over c of u [o][c][9] * tile [c][9]
// (each tile vector loaded once for the OC multiply-adds, u as broadcast memory operands), then per channel the
// output transform, bias, max, argmax and ReLU as in conv_pool16_tile.
template <class V, int OC>
LENET_TILE_FUNCTION
void winograd_pool_tile(const ConvShape* s, const float* tile, const float* u, const float* bias, float* y,
                        float* argmax, int o0, int py, int px, int relu) {
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
    const int out_h = s->oh / 2, out_w = s->ow / 2;
    LENET_TILE_LOOP for (int o = 0; o < OC; ++o) {
        typename V::T conv[4];
        winograd_output_tile(m[o], conv);
        const typename V::T b = V::set1(bias ? bias[o0 + o] : 0.0f);
        typename V::T best = V::add(conv[0], b), which = V::zero();
        LENET_TILE_LOOP for (int d = 1; d < 4; ++d) {  // strictly greater: the first maximum wins
            const typename V::T at = V::add(conv[d], b);
            const typename V::M more = V::gt(at, best);
            best = V::select(more, at, best);
            which = V::select(more, V::set1(float(d)), which);
        }
        const ptrdiff_t at = ((ptrdiff_t(o0 + o) * out_h + py) * out_w + px) * L;
        V::store(y + at, relu ? V::max(best, V::zero()) : best);
        if (argmax) V::store(argmax + at, relu ? V::select(V::gt(best, V::zero()), which, V::set1(-1.0f)) : which);
    }
}

// Per pooling window: its 3x3 input tile of every input channel transformed into `tile` [ic][9][16] (in L1 for the
// channel tiles that follow), then the output channels in tiles of kWinogradChannels.
template <class V>
void conv_pool_fwd_winograd(const ConvShape* s, const float* xpad, const float* u, const float* bias, float* y,
                            float* argmax, int relu, float* tile) {
    constexpr int L = 16;
    const int out_h = s->oh / 2, out_w = s->ow / 2;
    const ptrdiff_t ph = s->oh + 1, pw = s->ow + 1;
    for (int py = 0; py < out_h; ++py)
        for (int px = 0; px < out_w; ++px) {
            for (int c = 0; c < s->ic; ++c) {
                const float* p = xpad + ((c * ph + 2 * py) * pw + 2 * px) * L;
                typename V::T d[3][3], v[9];
                LENET_TILE_LOOP for (int r = 0; r < 3; ++r)
                    LENET_TILE_LOOP for (int q = 0; q < 3; ++q) d[r][q] = V::load(p + (r * pw + q) * L);
                winograd_input_tile(d, v);
                LENET_TILE_LOOP for (int i = 0; i < 9; ++i) V::store(tile + (c * 9 + i) * L, v[i]);
            }
            for (int o0 = 0; o0 < s->oc; o0 += kWinogradChannels)
                with_size<kWinogradChannels>(s->oc - o0 < kWinogradChannels ? s->oc - o0 : kWinogradChannels,
                                             [&](auto oc) {
                                                 winograd_pool_tile<V, decltype(oc)::value>(s, tile, u, bias, y, argmax,
                                                                                            o0, py, px, relu);
                                             });
        }
}

// The table's slot: the kernel where the ISA has it, else null.
template <class V> constexpr decltype(KernelTable::conv_pool_fwd_winograd) winograd_pool_slot() {
    if constexpr (has_winograd_pool<V>()) return conv_pool_fwd_winograd<V>;
    else return nullptr;
}

}  // namespace
}  // namespace lenet::simd
