// Bias, activations, softmax cross-entropy and optimiser updates, vectorised with a partial last vector.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "../ref/ref.h"
#include "tile.h"

namespace lenet::simd {
namespace {

// Applies f(offset, n) over [0, count) in chunks of one vector; n < W only for the last chunk.
template <class V, class F>
void for_chunks(ptrdiff_t count, F&& f) {
    ptrdiff_t i = 0;
    for (; i + V::W <= count; i += V::W) f(i, V::W);
    if (i < count) f(i, int(count - i));
}
template <class V> typename V::T ld(const float* p, int n) { return n == V::W ? V::load(p) : V::load_n(p, n); }
template <class V> void st(float* p, typename V::T v, int n) {
    if (n == V::W) V::store(p, v);
    else V::store_n(p, v, n);
}

// exp(x) for x in [-87, 88] (clamped), Cephes polynomial, relative error about 2 ulp.
template <class V> typename V::T vexp(typename V::T x) {
    x = V::min(V::max(x, V::set1(-87.0f)), V::set1(88.0f));
    const typename V::T n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
    typename V::T r = V::fnmadd(n, V::set1(0.693359375f), x);
    r = V::fnmadd(n, V::set1(-2.12194440e-4f), r);
    typename V::T p = V::set1(1.9875691500e-4f);
    p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
    p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
    p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
    p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
    p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
    p = V::fmadd(V::mul(p, r), r, V::add(r, V::set1(1.0f)));
    return V::scale2(p, n);
}

template <class V>
void bias_add(int C, ptrdiff_t P, const float* b, float* y) {
    for (int c = 0; c < C; ++c) {
        const typename V::T bv = V::set1(b[c]);
        float* row = y + c * P;
        for_chunks<V>(P, [&](ptrdiff_t i, int n) { st<V>(row + i, V::add(ld<V>(row + i, n), bv), n); });
    }
}

template <class V>
void bias_grad(int C, ptrdiff_t P, const float* dy, float* db) {
    for (int c = 0; c < C; ++c) {
        typename V::T acc = V::zero();
        const float* row = dy + c * P;
        for_chunks<V>(P, [&](ptrdiff_t i, int n) { acc = V::add(acc, ld<V>(row + i, n)); });
        db[c] += V::hsum(acc);
    }
}

// Whether p can take a streamed vector store (aligned to the vector).
template <class V>
bool stream_aligned(const float* p) {
    return reinterpret_cast<uintptr_t>(p) % (V::W * sizeof(float)) == 0;
}

// n floats from src to dst, with streamed stores for the whole aligned vectors where `stream`.
template <class V>
void put_row(float* dst, const float* src, int n, bool stream) {
    for_chunks<V>(n, [&](ptrdiff_t i, int k) {
        const typename V::T v = ld<V>(src + i, k);
        if (stream && k == V::W && stream_aligned<V>(dst + i)) V::stream(dst + i, v);
        else st<V>(dst + i, v, k);
    });
}

// kernels.h's dense_gather. x^T goes 16 features at a time (inside one panel: P is a multiple of 16): the tile's 16
// rows of x stay in L1 while each lane's 16 features are collected into one line and written as whole vectors (a
// transpose one element at a time down all `in` rows read each x line L times from L2: on the MNIST-CoreML-Training
// graph's 1152 x 64 lanes, most of the gather). Streams: in the slow phases of the AMD Zen 4 VM, whose cross-core
// round trip then took 330-380 ns instead of 65-90, the plain stores' gather took 200-220 us per thread and step of
// that graph (72-90 us in the fast phases), LeNet-5's 41-63 us (10-11 us): each line it wrote had been read by the
// other core in the last step's weight gradient.
template <class V>
void dense_gather(int L, int in, int out, ptrdiff_t col0, ptrdiff_t B, int P, const float* x, const float* dy,
                  float* xP, float* dyT, int stream) {
    const bool s = stream && V::has_stream;
    for (int o = 0; dyT && o < out; ++o) put_row<V>(dyT + o * B + col0, dy + size_t(o) * L, L, s);
    constexpr int kTile = 16;
    alignas(64) float line[kTile];
    for (int i0 = 0; xP && i0 < in; i0 += kTile) {
        const int n = in - i0 < kTile ? in - i0 : kTile;
        float* panel = xP + (i0 - i0 % P) * B + i0 % P;
        for (int l = 0; l < L; ++l) {
            for (int i = 0; i < n; ++i) line[i] = x[size_t(i0 + i) * L + l];
            put_row<V>(panel + (col0 + l) * P, line, n, s);
        }
    }
    if (s) V::stream_fence();  // before the pool's barrier hands the gathers to the other threads
}

// kernels.h's pack_u8_16. AVX-512 and AVX2: 16 pixels of each sample converted in one or two vectors, the 16 samples'
// rows transposed into the pixels' (one element at a time, with a table lookup, it took 3-4% of LeNet-5's training
// step on AVX-512; the reference's loop 3.1% of AVX2's); elsewhere the reference.
template <class V>
void pack_u8_16(size_t F, const uint8_t* const* src, float* out) {
    if constexpr (V::W == 16 || V::W == 8) {
        constexpr int L = 16;
        alignas(64) float rows[L * L];  // [sample][pixel]
        size_t f = 0;
        for (; f + L <= F; f += L) {
            for (int l = 0; l < L; ++l)
                for (int h = 0; h < L; h += V::W)
                    V::store(rows + l * L + h, V::div(V::load_u8(src[l] + f + h), V::set1(255.0f)));
            V::transpose16(rows, L, out + f * L, L);
        }
        if (f == F) return;
        const uint8_t* tail[L];  // the last F % 16 pixels of each sample
        for (int l = 0; l < L; ++l) tail[l] = src[l] + f;
        ref::pack_u8_16(F - f, tail, out + f * L);
    } else {
        ref::pack_u8_16(F, src, out);
    }
}

template <class V>
void relu_fwd(ptrdiff_t n, const float* x, float* y) {
    for_chunks<V>(n, [&](ptrdiff_t i, int k) { st<V>(y + i, V::max(ld<V>(x + i, k), V::zero()), k); });
}
template <class V>
void relu_bwd(ptrdiff_t n, const float* y, const float* dy, float* dx) {
    for_chunks<V>(n, [&](ptrdiff_t i, int k) {
        st<V>(dx + i, V::select(V::gt(ld<V>(y + i, k), V::zero()), ld<V>(dy + i, k), V::zero()), k);
    });
}
// tanh(x) = 1 - 2 / (exp(2x) + 1), x clamped to [-9, 9] where tanh is +-1 in float.
template <class V>
void tanh_fwd(ptrdiff_t n, const float* x, float* y) {
    const typename V::T one = V::set1(1.0f), two = V::set1(2.0f);
    for_chunks<V>(n, [&](ptrdiff_t i, int k) {
        const typename V::T xc = V::min(V::max(ld<V>(x + i, k), V::set1(-9.0f)), V::set1(9.0f));
        const typename V::T e = vexp<V>(V::mul(two, xc));
        st<V>(y + i, V::sub(one, V::div(two, V::add(e, one))), k);
    });
}
template <class V>
void tanh_bwd(ptrdiff_t n, const float* y, const float* dy, float* dx) {
    for_chunks<V>(n, [&](ptrdiff_t i, int k) {
        const typename V::T yv = ld<V>(y + i, k);
        st<V>(dx + i, V::mul(ld<V>(dy + i, k), V::fnmadd(yv, yv, V::set1(1.0f))), k);
    });
}

// logits [K][L] with one sample per lane; vectorised along the lanes.
template <class V>
void softmax_xent(int K, int L, const float* logits, const int32_t* label, float scale, float* loss,
                  float* dlogits) {
    for_chunks<V>(L, [&](ptrdiff_t l0, int n) {
        float labf[V::W], sums[V::W];
        for (int l = 0; l < V::W; ++l) labf[l] = l < n ? float(label[l0 + l]) : -1.0f;
        const typename V::T lab = V::load(labf);
        typename V::T mx = ld<V>(logits + l0, n);
        for (int k = 1; k < K; ++k) mx = V::max(mx, ld<V>(logits + k * L + l0, n));
        typename V::T sum = V::zero();
        for (int k = 0; k < K; ++k) sum = V::add(sum, vexp<V>(V::sub(ld<V>(logits + k * L + l0, n), mx)));
        const typename V::M valid = V::gt(lab, V::set1(-0.5f));
        const typename V::T sc = V::set1(scale), inv = V::div(V::set1(1.0f), sum);
        for (int k = 0; k < K; ++k) {
            const typename V::T p = V::mul(vexp<V>(V::sub(ld<V>(logits + k * L + l0, n), mx)), inv);
            const typename V::T g = V::sub(p, V::select(V::eq(lab, V::set1(float(k))), V::set1(1.0f), V::zero()));
            st<V>(dlogits + k * L + l0, V::select(valid, V::mul(g, sc), V::zero()), n);
        }
        float mxs[V::W];
        V::store(sums, sum);
        V::store(mxs, mx);
        for (int l = 0; l < n; ++l) {
            const int y = label[l0 + l];
            loss[l0 + l] = y < 0 ? 0.0f : logf(sums[l]) + mxs[l] - logits[y * L + l0 + l];
        }
    });
}

// The weights an update writes were read by every thread's blocks in the step, so on two cores most of their cache
// lines sit in the other core's cache too, and a store to such a line waits until that copy is invalidated: one
// cross-core round trip per line, which the store queue overlaps only a few at a time. With `stream` (the caller's
// choice: more than one thread) the new weights go out in cache-bypassing stores instead, which wait for no line.
// On AMD Zen 4, two threads, interleaved rounds in one process:
// - the MNIST-CoreML-Training graph's step, in phases where the machine made those round trips slow: 4818 -> 3759 us
//   (46 of 46 rounds; its Adam update had taken 1.2 ms per thread and step, 0.12 ms without the weight stores); in
//   other phases 3618 -> 3524 us (10 of 14), and 3860 -> 3630 us (34 of 40) in a later run;
// - LeNet-5's step (SGD): 924 -> 845 us (45 of 49) and 903 -> 823 us (40 of 40); on AVX2 892 -> 883 us (19 of 26).
// On one thread no other core holds the lines, and the weights stay in this core's cache for the next forward:
// LeNet-5's step there took 1.8% longer with streams (28 of 30 rounds), so they are not used.
// Without streams (one thread, or NEON, whose single-vector stores have no such form), a write prefetch a kilobyte
// ahead of the stores overlaps those round trips instead: on the Intel VM's slow phases the CoreML graph's two-thread
// step went 3080 -> 2940 us with it (97 pairs of runs; streams were not measured there). Only where the prefetch is
// a write prefetch (prefetchw: built with -mprfchw; aarch64: prfm pstl1keep).
constexpr ptrdiff_t kWriteAhead = 256;  // floats: 16 cache lines
inline void announce_write(ptrdiff_t i, ptrdiff_t n, float* w) {
#if defined(__PRFCHW__) || defined(__aarch64__)
    if (i % 16 == 0 && i + kWriteAhead < n) __builtin_prefetch(w + i + kWriteAhead, /*write=*/1);
#else
    (void)i, (void)n, (void)w;
#endif
}

// An update over w [0, n): f(i, k) gives the new w[i, i + k), k <= W. Where `stream` and the ISA has streams, the first
// chunk runs up to w's first float aligned to a vector (streams need that) and every full chunk after it is streamed;
// the rest is stored plainly behind announce_write. (One call of f: its body is compiled once.)
template <class V, class F>
void update_chunks(ptrdiff_t n, float* w, bool stream, F&& f) {
    stream = stream && V::has_stream;
    constexpr uintptr_t kAlign = V::W * sizeof(float);
    const ptrdiff_t head = ptrdiff_t((kAlign - reinterpret_cast<uintptr_t>(w) % kAlign) % kAlign / sizeof(float));
    for (ptrdiff_t i = 0, step = stream && head ? head : V::W; i < n; i += step, step = V::W) {
        const int k = int(step < n - i ? step : n - i);
        const typename V::T x = f(i, k);
        if (stream && k == V::W) {
            V::stream(w + i, x);
        } else {
            announce_write(i, n, w);
            st<V>(w + i, x, k);
        }
    }
    if (stream) V::stream_fence();  // before the pool's barrier publishes the weights to the other threads
}

template <class V>
void sgd_update(ptrdiff_t n, float* w, const float* g, float* v, float lr, float momentum, float wd, int nesterov,
                int stream) {
    const typename V::T lrv = V::set1(lr), mom = V::set1(momentum), wdv = V::set1(wd);
    update_chunks<V>(n, w, stream != 0, [&](ptrdiff_t i, int k) {
        const typename V::T wi = ld<V>(w + i, k), gi = V::fmadd(wdv, wi, ld<V>(g + i, k));
        const typename V::T vi = V::fmadd(mom, ld<V>(v + i, k), gi);
        st<V>(v + i, vi, k);
        return V::fnmadd(lrv, nesterov ? V::fmadd(mom, vi, gi) : vi, wi);
    });
}

template <class V>
void adam_update(ptrdiff_t n, float* w, const float* g, float* m, float* v, float lr, float b1, float b2, float eps,
                 float wd, int step, int stream) {
    const float bc1 = 1.0f - powf(b1, float(step)), bc2 = 1.0f - powf(b2, float(step));
    const typename V::T step_size = V::set1(lr / bc1), inv_sqrt_bc2 = V::set1(1.0f / sqrtf(bc2));
    const typename V::T b1v = V::set1(b1), b2v = V::set1(b2), c1 = V::set1(1.0f - b1), c2 = V::set1(1.0f - b2);
    const typename V::T epsv = V::set1(eps), wdv = V::set1(wd);
    update_chunks<V>(n, w, stream != 0, [&](ptrdiff_t i, int k) {
        const typename V::T wi = ld<V>(w + i, k), gi = V::fmadd(wdv, wi, ld<V>(g + i, k));
        const typename V::T mi = V::fmadd(b1v, ld<V>(m + i, k), V::mul(c1, gi));
        const typename V::T vi = V::fmadd(b2v, ld<V>(v + i, k), V::mul(c2, V::mul(gi, gi)));
        st<V>(m + i, mi, k);
        st<V>(v + i, vi, k);
        const typename V::T denom = V::fmadd(V::sqrt(vi), inv_sqrt_bc2, epsv);
        return V::fnmadd(step_size, V::div(mi, denom), wi);
    });
}

// acc_budget independent FMA chains: enough to cover FMA latency x FMA pipes on every target.
template <class V>
double fma_loop(int64_t iters, float* sink) {
    constexpr int N = V::acc_budget;
    typename V::T acc[N];
    LENET_TILE_LOOP for (int j = 0; j < N; ++j) acc[j] = V::set1(float(j));
    const typename V::T a = V::set1(0.9999999f), b = V::set1(1e-7f);
    for (int64_t i = 0; i < iters; ++i) {
        LENET_TILE_LOOP for (int j = 0; j < N; ++j) acc[j] = V::fmadd(acc[j], a, b);
    }
    typename V::T sum = acc[0];
    LENET_TILE_LOOP for (int j = 1; j < N; ++j) sum = V::add(sum, acc[j]);
    *sink = V::hsum(sum);
    return double(iters) * N * V::W * 2;
}

}  // namespace
}  // namespace lenet::simd
