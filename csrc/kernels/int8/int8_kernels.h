// The SIMD int8 kernels of int8.h, written once over a small vector type D (int8_x86.h, int8_neon.cpp):
//   D::V                       int32 lanes per vector
//   D::I, D::F                 vectors of V int32 / V float
//   D::load(p)                 4V bytes from p (unaligned)      D::bcast(v)   v in every int32 lane
//   D::prep(u8)                what D::dot expects as its unsigned operand (identity, or q - 128 for sdot:
//                              then D::kFlip = 128 and the kernel adds 128 * wsum back)
//   D::dot(acc, u8, s8)        acc + the dot products of 4 bytes per int32 lane, u8 x s8
//   D::add, cvt (int -> float), mul, max, min, round (float -> int, half to even), seti, setf, loadi, loadf
//   D::store_u8(p, q, n), D::store_f(p, f, n)   the first n lanes (q: values 0..255)
//   D::regroup(src, dst)       dst[i] = src[i + 0..3] for the V groups i < V (4V bytes to dst)
// Included by one ISA-specific translation unit each: everything here has internal linkage.
#pragma once
#include <string.h>

#include "int8.h"

namespace lenet {
namespace {
namespace int8k {

inline int32_t load32(const void* p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// Per-lane requantisation constants of output channels m0..m0+n-1 (bias with the kFlip correction, multiplier).
template <class D>
struct Requant {
    typename D::I bias, zero;
    typename D::F mult, lo, hi;
    Requant(const QRequant& r, int m0, int n) {
        int32_t b[16];
        float s[16];
        for (int i = 0; i < D::V; ++i) {
            const int m = m0 + (i < n ? i : 0);
            b[i] = r.bias[m] + D::kFlip * r.wsum[m];
            s[i] = r.mult[m];
        }
        bias = D::loadi(b);
        mult = D::loadf(s);
        zero = D::seti(r.zero);
        lo = D::setf(float(r.lo - r.zero));
        hi = D::setf(float(255 - r.zero));
    }
    // The same constants for one output channel in every lane.
    Requant(const QRequant& r, int m) {
        bias = D::seti(r.bias[m] + D::kFlip * r.wsum[m]);
        mult = D::setf(r.mult[m]);
        zero = D::seti(r.zero);
        lo = D::setf(float(r.lo - r.zero));
        hi = D::setf(float(255 - r.zero));
    }
    void store_u8(uint8_t* y, typename D::I acc, int n) const {
        typename D::F f = D::mul(D::cvt(D::add(acc, bias)), mult);
        f = D::min(D::max(f, lo), hi);
        D::store_u8(y, D::add(D::round(f), zero), n);
    }
    void store_f(float* y, typename D::I acc, int n) const { D::store_f(y, D::mul(D::cvt(D::add(acc, bias)), mult), n); }
};

// R output channels x NV vectors of one output row, from output pixel ox0 and channel m0.
template <class D, int R, int NV>
void conv_block(const QConvArgs* a, int oy, int ox0, int m0) {
    using I = typename D::I;
    constexpr int V = D::V;
    const int G = a->groups;
    const ptrdiff_t wstride = ptrdiff_t(a->ic) * a->kh * G * 4;  // bytes of weights per output channel
    I acc[R][NV];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < NV; ++j) acc[i][j] = D::zero();
    for (int c = 0; c < a->ic; ++c)
        for (int ky = 0; ky < a->kh; ++ky) {
            const uint8_t* row = a->xq + ((ptrdiff_t(c) * G * a->hp + oy * a->sh + ky) * a->ld + ox0) * 4;
            const int8_t* wr = a->w + m0 * wstride + ptrdiff_t(c * a->kh + ky) * G * 4;
            for (int g = 0; g < G; ++g) {
                I d[NV];
                for (int j = 0; j < NV; ++j) d[j] = D::prep(D::load(row + (g * a->hp * a->ld + j * V) * 4));
                for (int i = 0; i < R; ++i) {
                    const I w = D::bcast(load32(wr + i * wstride + g * 4));
                    for (int j = 0; j < NV; ++j) acc[i][j] = D::dot(acc[i][j], d[j], w);
                }
            }
        }
    for (int i = 0; i < R; ++i) {
        const Requant<D> rq(a->rq, m0 + i);
        uint8_t* y = a->y + (ptrdiff_t(m0 + i) * a->oh + oy) * a->ow + ox0;
        for (int j = 0; j < NV; ++j) {
            const int n = a->ow - ox0 - j * V;
            rq.store_u8(y + j * V, acc[i][j], n < V ? n : V);
        }
    }
}

template <class D, int NV>
void conv_row(const QConvArgs* a, int oy, int ox0) {
    constexpr int R = 4;
    for (int m0 = 0; m0 < a->oc; m0 += R) {
        switch (a->oc - m0 < R ? a->oc - m0 : R) {
            case 1: conv_block<D, 1, NV>(a, oy, ox0, m0); break;
            case 2: conv_block<D, 2, NV>(a, oy, ox0, m0); break;
            case 3: conv_block<D, 3, NV>(a, oy, ox0, m0); break;
            default: conv_block<D, R, NV>(a, oy, ox0, m0); break;
        }
    }
}

template <class D>
void conv(const QConvArgs* a) {
    constexpr int V = D::V, NV = 2;  // 4 channels x 2 vectors: 8 accumulators (AVX2 has 16 registers)
    for (int oy = 0; oy < a->oh; ++oy)
        for (int ox0 = 0; ox0 < a->ow; ox0 += NV * V) {
            if (a->ow - ox0 > V) conv_row<D, 2>(a, oy, ox0);
            else conv_row<D, 1>(a, oy, ox0);
        }
}

// NB vectors of outputs from m0.
template <class D, int NB>
void dense_block(const QDenseArgs* a, int m0) {
    using I = typename D::I;
    constexpr int V = D::V;
    I acc[NB];
    for (int j = 0; j < NB; ++j) acc[j] = D::zero();
    const int8_t* w = a->w + ptrdiff_t(m0) * 4;
    for (int k = 0; k < a->k4; ++k, w += ptrdiff_t(a->mpad) * 4) {
        const I x = D::prep(D::bcast(load32(a->x + 4 * k)));
        for (int j = 0; j < NB; ++j) acc[j] = D::dot(acc[j], x, D::load(w + j * V * 4));
    }
    for (int j = 0; j < NB; ++j) {
        const int left = a->m - m0 - j * V, n = left < V ? left : V;
        const Requant<D> rq(a->rq, m0 + j * V, n);
        if (a->y) rq.store_u8(a->y + m0 + j * V, acc[j], n);
        else rq.store_f(a->yf + m0 + j * V, acc[j], n);
    }
}

template <class D>
void dense(const QDenseArgs* a) {
    constexpr int V = D::V, NB = 4;
    for (int m0 = 0; m0 < a->m; m0 += NB * V) {
        switch ((a->m - m0 + V - 1) / V) {
            case 1: dense_block<D, 1>(a, m0); break;
            case 2: dense_block<D, 2>(a, m0); break;
            case 3: dense_block<D, 3>(a, m0); break;
            default: dense_block<D, NB>(a, m0); break;
        }
    }
}

// QConvArgs::xq for one row at stride 1, V groups per step.
template <class D>
void regroup(const uint8_t* src, int n, uint8_t* dst) {
    for (int i = 0; i < n; i += D::V) D::regroup(src + i, dst + 4 * i);
}

}  // namespace int8k
}  // namespace

}  // namespace lenet
