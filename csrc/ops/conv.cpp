// 2-D convolution: im2col + GEMM for every shape, the direct lanes kernel where it applies.
// Per block of L samples the activation is a row-major matrix [C][H*W*L], so
//   forward:  y[oc][P*L]  = W[oc][K] * col[K][P*L]            (gemm_nn), K = ic*kh*kw, P = oh*ow
//   dW:       dW[oc][K] += dy[oc][P*L] . col[K][P*L]^T        (gemm_nt, long reduction over P*L)
//   dX:       dcol[K][P*L] = W^T[K][oc] * dy[oc][P*L]         (gemm_nn with a transposed A), then col2im
#include <cstring>
#include <vector>

#include "../core/aligned.h"
#include "../core/dispatch.h"
#include "../core/threadpool.h"
#include "block.h"
#include "conv_bf16.h"
#include "ops.h"

namespace lenet::ops {

void conv_output_size(ConvShape& s) {
    s.oh = (s.ih + 2 * s.ph - s.kh) / s.sh + 1;
    s.ow = (s.iw + 2 * s.pw - s.kw) / s.sw + 1;
}

bool conv_direct_possible(const ConvShape& s, bool backward) {
    return kernels().conv_direct_fwd && kernels().conv_direct_dw && s.sh == 1 && s.sw == 1 &&
           (s.lanes == 16 || (s.lanes == 1 && !backward));
}

bool conv_uses_direct(const ConvShape& s, ConvAlgo algo, bool backward) {
    if (algo == ConvAlgo::Im2col || !conv_direct_possible(s, backward)) return false;
    return algo == ConvAlgo::Direct || kernels().vector_floats > 1;  // the reference serves Auto with im2col
}

namespace block {

size_t floats(int c, int h, int w, int L) { return size_t(c) * h * w * L; }

namespace {
size_t block_floats(int c, int h, int w, int L) { return floats(c, h, w, L); }

// Copies and fills of a few floats (an image row of one sample is 10-30 floats): inline loops, since a libc call
// per row would cost more than the row. gcc turns plain loops back into those calls unless told not to, hence the
// attribute on the functions they are inlined into.
#define LENET_NO_LIBC_LOOPS __attribute__((optimize("no-tree-loop-distribute-patterns")))
inline void copy(float* dst, const float* src, size_t n) {
    if (n >= 64) std::memcpy(dst, src, n * sizeof(float));
    else
        for (size_t i = 0; i < n; ++i) dst[i] = src[i];
}
inline void fill_zero(float* dst, size_t n) {
    if (n >= 64) std::memset(dst, 0, n * sizeof(float));
    else
        for (size_t i = 0; i < n; ++i) dst[i] = 0.0f;
}

// col[(c*kh+ky)*kw+kx][oy][ox][L] = x[c][oy*sh-ph+ky][ox*sw-pw+kx][L] (zero outside the image).
LENET_NO_LIBC_LOOPS void im2col(const ConvShape& s, const float* x, float* col) {
    const int L = s.lanes;
    const size_t row_floats = size_t(s.ow) * L;
    for (int c = 0; c < s.ic; ++c)
        for (int ky = 0; ky < s.kh; ++ky)
            for (int kx = 0; kx < s.kw; ++kx) {
                float* dst = col + size_t((c * s.kh + ky) * s.kw + kx) * s.oh * row_floats;
                // Output columns whose input column is inside the image: ox in [lo, hi).
                int lo = 0, hi = s.ow;
                while (lo < s.ow && lo * s.sw - s.pw + kx < 0) ++lo;
                while (hi > lo && (hi - 1) * s.sw - s.pw + kx >= s.iw) --hi;
                for (int oy = 0; oy < s.oh; ++oy, dst += row_floats) {
                    const int iy = oy * s.sh - s.ph + ky;
                    if (iy < 0 || iy >= s.ih || lo >= hi) {
                        fill_zero(dst, row_floats);
                        continue;
                    }
                    fill_zero(dst, size_t(lo) * L);
                    fill_zero(dst + size_t(hi) * L, size_t(s.ow - hi) * L);
                    const float* src = x + (size_t(c * s.ih + iy) * s.iw + (lo * s.sw - s.pw + kx)) * L;
                    if (s.sw == 1) {
                        copy(dst + size_t(lo) * L, src, size_t(hi - lo) * L);
                    } else {
                        for (int ox = lo; ox < hi; ++ox) copy(dst + size_t(ox) * L, src + size_t(ox - lo) * s.sw * L, L);
                    }
                }
            }
}

// The adjoint of im2col: dx[c][iy][ix][L] += dcol[...] (dx zeroed by the caller).
void col2im(const ConvShape& s, const float* dcol, float* dx) {
    const int L = s.lanes;
    for (int c = 0; c < s.ic; ++c)
        for (int ky = 0; ky < s.kh; ++ky)
            for (int kx = 0; kx < s.kw; ++kx) {
                const float* src = dcol + size_t((c * s.kh + ky) * s.kw + kx) * s.oh * s.ow * L;
                for (int oy = 0; oy < s.oh; ++oy) {
                    const int iy = oy * s.sh - s.ph + ky;
                    if (iy < 0 || iy >= s.ih) continue;
                    for (int ox = 0; ox < s.ow; ++ox) {
                        const int ix = ox * s.sw - s.pw + kx;
                        if (ix < 0 || ix >= s.iw) continue;
                        const float* g = src + (size_t(oy) * s.ow + ox) * L;
                        float* d = dx + (size_t(c * s.ih + iy) * s.iw + ix) * L;
                        for (int l = 0; l < L; ++l) d[l] += g[l];
                    }
                }
            }
}

// Floats of the block x [ic][ih][iw][L] zero-padded: xpad [ic][ih+2ph][iw+2pw][L].
size_t padded_floats(const ConvShape& s) { return block_floats(s.ic, s.ih + 2 * s.ph, s.iw + 2 * s.pw, s.lanes); }

// x [ic][ih][iw][L] -> the interior of xpad [ic][ih+2ph][iw+2pw][L] (its border left as it is).
void pad_interior(const ConvShape& s, const float* x, float* xpad) {
    const int L = s.lanes, ph = s.ih + 2 * s.ph, pw = s.iw + 2 * s.pw;
    for (int c = 0; c < s.ic; ++c)
        for (int y = 0; y < s.ih; ++y)
            std::memcpy(xpad + ((size_t(c) * ph + y + s.ph) * pw + s.pw) * L, x + (size_t(c) * s.ih + y) * s.iw * L,
                        size_t(s.iw) * L * sizeof(float));
}

// x [ic][ih][iw][L] -> xpad [ic][ih+2ph][iw+2pw][L] with a zero border.
void pad_block(const ConvShape& s, const float* x, float* xpad) {
    std::memset(xpad, 0, padded_floats(s) * sizeof(float));
    pad_interior(s, x, xpad);
}

// The block x as the direct kernels read it: itself without padding, else a zero-bordered copy in scratch slot.
const float* padded(const ConvShape& s, const float* x, int thread, int slot) {
    if (!s.ph && !s.pw) return x;
    float* xpad = scratch(thread, slot, padded_floats(s));
    pad_block(s, x, xpad);
    return xpad;
}

}  // namespace

// The input gradient of a stride-1 convolution is itself a stride-1 convolution: dY zero-padded by (k-1-p),
// with the weights transposed (in <-> out channels) and flipped.
ConvShape dx_shape(const ConvShape& s) {
    return ConvShape{s.oc, s.oh, s.ow, s.ic, s.ih, s.iw, s.kh, s.kw, 1, 1, s.kh - 1 - s.ph, s.kw - 1 - s.pw, s.lanes};
}

namespace {
bool dx_winograd(const KernelTable& k, const ConvShape& s) {
    return k.conv_winograd_fwd && winograd_shape(dx_shape(s));
}

// dx = the convolution of dy_pad (padded dY) with dx_weights' wt.
void dx_convolution(const KernelTable& k, const ConvShape& s, const float* dy_pad, const float* wt, float* dx,
                    int thread) {
    const ConvShape sdx = dx_shape(s);
    if (!dx_winograd(k, s)) return k.conv_direct_fwd(&sdx, dy_pad, wt, nullptr, nullptr, dx);
    k.conv_winograd_fwd(&sdx, dy_pad, wt, nullptr, dx, scratch(thread, 9, size_t(winograd_tile_floats(sdx.ic, 2))));
}
}  // namespace

bool dx_reads_derived(const KernelTable& k, const ConvShape& s) {
    return k.conv_pool_dx_winograd && winograd_dx_shape(s);
}

size_t dx_weight_floats(const KernelTable& k, const ConvShape& s) {
    return size_t(s.oc) * s.ic * (dx_winograd(k, s) ? 9 : s.kh * s.kw);
}

void dx_weights(const KernelTable& k, const ConvShape& s, const float* w, float* wt) {
    const int taps = s.kh * s.kw;
    const bool winograd = dx_winograd(k, s);
    for (int o = 0; o < s.oc; ++o)
        for (int c = 0; c < s.ic; ++c) {
            const float* from = w + (size_t(o) * s.ic + c) * taps;
            float flipped[4];  // a 2x2 kernel's, before Winograd's transform
            float* to = winograd ? flipped : wt + (size_t(c) * s.oc + o) * taps;
            for (int t = 0; t < taps; ++t) to[taps - 1 - t] = from[t];
            if (winograd) winograd_2x2_weights(1, 1, flipped, wt + (size_t(c) * s.oc + o) * 9);
        }
}

void conv_forward(const KernelTable& k, const ConvShape& s, bool direct, const float* x, const float* w,
                  const float* derived, const float* b, float* y, int thread) {
    if (direct) {
        k.conv_direct_fwd(&s, padded(s, x, thread, 0), w, derived, b, y);
        return;
    }
    const int K = s.ic * s.kh * s.kw;
    const ptrdiff_t PL = ptrdiff_t(s.oh) * s.ow * s.lanes;
    float* col = scratch(thread, 0, size_t(K) * PL);
    im2col(s, x, col);
    k.gemm_nn(s.oc, int(PL), K, w, K, 1, col, PL, y, PL, 0, nullptr);
    if (b) k.bias_add(s.oc, PL, b, y);
}

size_t derived_weight_floats(const ConvShape& s, bool fused, bool direct) {
    const size_t pairs = size_t(s.oc) * s.ic;
    if (s.lanes == 1) return fused || direct ? pairs * s.kh * s.kw : 0;
    return fused && winograd_pool_shape(s) ? pairs * (s.kh + 1) * (s.kw + 1) : 0;
}

void derive_weights(const ConvShape& s, const float* w, float* derived) {
    if (s.lanes == 1) conv_weights_channels_last(&s, w, derived);
    else if (s.kh == 5) winograd_5x5_weights(s.oc, s.ic, w, derived);
    else winograd_2x2_weights(s.oc, s.ic, w, derived);
}

void conv_pool_forward(const KernelTable& k, const ConvShape& s, const float* x, const float* w, const float* derived,
                       const float* b, bool relu, float* y, float* argmax, int thread) {
    const float* xpad = padded(s, x, thread, 0);
    if (!k.conv_pool_fwd_winograd || !winograd_pool_shape(s))
        return k.conv_pool_fwd(&s, xpad, w, s.lanes == 1 ? derived : nullptr, b, y, argmax, relu);
    // Scratch slot 9: the transformed input tile, then the Winograd weights when derived here.
    const size_t tile = size_t(winograd_tile_floats(s.ic, s.kh));
    float* buf = scratch(thread, 9, tile + (derived ? 0 : derived_weight_floats(s, true, false)));
    if (!derived) derive_weights(s, w, buf + tile);
    k.conv_pool_fwd_winograd(&s, xpad, derived ? derived : buf + tile, b, y, argmax, relu, buf);
}

void conv_pool_backward(const KernelTable& k, const ConvShape& s, const float* x, const float* w, const float* wt,
                        const float* argmax, const float* dy, float* dw, float* db, float* dx, int thread,
                        float* dy_pad, const ConvBf16* bf16) {
    const float* xpad = padded(s, x, thread, 0);
    const bool sparse_dx = dx && !bf16 && conv_pool_sparse(k, s, true);
    const bool sparse_dw = dw && !bf16 && conv_pool_sparse(k, s, false);
    if (sparse_dx || sparse_dw)
        k.conv_pool_bwd_sparse(&s, xpad, w, argmax, dy, sparse_dw ? dw : nullptr, db, sparse_dx ? dx : nullptr,
                               scratch(thread, 12, size_t(conv_pool_sparse_work(&s).total)));
    const bool sparse = sparse_dx || sparse_dw;  // db done
    if (!dx || sparse_dx) {
        if (!sparse) k.conv_pool_dw(&s, xpad, argmax, dy, dw, db);
        return;
    }
    // The convolution's full-size gradient g is routed straight into the interior of dy_pad, its zero-padded copy
    // that the input gradient's convolution reads, and the weight gradient reads it there too; db, the sum of g, is
    // the sum of the routed dy (conv_pool_dw). (A separate g also took a pass that copied it into the padded buffer
    // and one that summed it: on the MNIST-CoreML-Training graph's second layer, 12 + 3 us of a block's 260.)
    const ConvShape sdx = dx_shape(s);
    k.conv_pool_route(&s, argmax, dy, dy_pad, sdx.ph, sdx.pw);
    if (dw && bf16) conv_dw_bf16(*bf16->t, s, xpad, dy_pad, sdx.ph, sdx.pw, dw, thread);
    else if (dw && !sparse_dw) k.conv_direct_dw(&s, xpad, dy_pad, sdx.ph, sdx.pw, dw);
    if (db && !sparse) k.conv_pool_dw(&s, xpad, argmax, dy, nullptr, db);
    if (bf16 && bf16->wt) conv_dx_bf16(*bf16->t, s, bf16->wt, dy_pad, dx, thread);
    else if (dx_reads_derived(k, s))
        k.conv_pool_dx_winograd(&s, dy_pad, sdx.ph, sdx.pw, wt, dx,
                                scratch(thread, 9, size_t(winograd5_dx_work_floats(&s))));
    else dx_convolution(k, s, dy_pad, wt, dx, thread);
}

size_t padded_dy_floats(const ConvShape& s) { return padded_floats(dx_shape(s)); }

void conv_backward(const KernelTable& k, const ConvShape& s, bool direct, const float* x, const float* w,
                   const float* wt, const float* dy, float* dw, float* db, float* dx, int thread, float* dy_pad) {
    const int K = s.ic * s.kh * s.kw;
    const ptrdiff_t PL = ptrdiff_t(s.oh) * s.ow * s.lanes;
    if (!dw) {
        // a frozen weight: no gradient
    } else if (direct) {
        k.conv_direct_dw(&s, padded(s, x, thread, 0), dy, 0, 0, dw);
    } else {
        float* col = scratch(thread, 0, size_t(K) * PL);
        im2col(s, x, col);
        k.gemm_nt(s.oc, K, int(PL), dy, PL, col, PL, dw, K, 0);
    }
    if (db) {
        for (int o = 0; o < s.oc; ++o) db[o] = 0.0f;
        k.bias_grad(s.oc, PL, dy, db);
    }
    if (!dx) return;
    if (direct) {
        const ConvShape sdx = dx_shape(s);
        const bool keep = dy_pad && (sdx.ph || sdx.pw);  // the caller's buffer: its zero border is already there
        if (keep) pad_interior(sdx, dy, dy_pad);
        dx_convolution(k, s, keep ? dy_pad : padded(sdx, dy, thread, 1), wt, dx, thread);
    } else {
        float* dcol = scratch(thread, 1, size_t(K) * PL);
        k.gemm_nn(K, int(PL), s.oc, w, 1, K, dy, PL, dcol, PL, 0, nullptr);
        std::memset(dx, 0, block_floats(s.ic, s.ih, s.iw, s.lanes) * sizeof(float));
        col2im(s, dcol, dx);
    }
}

}  // namespace block

void conv2d_forward(const ConvShape& s, int nblk, const float* x, const float* w, const float* b, float* y,
                    ConvAlgo algo) {
    const KernelTable& k = kernels();
    const size_t xb = block::floats(s.ic, s.ih, s.iw, s.lanes), yb = block::floats(s.oc, s.oh, s.ow, s.lanes);
    const bool direct = conv_uses_direct(s, algo, /*backward=*/false);
    ThreadPool::instance().parallel_for(nblk, [&](int blk, int thread) {
        block::conv_forward(k, s, direct, x + blk * xb, w, nullptr, b, y + blk * yb, thread);
    });
}

void conv_pool_forward(const ConvShape& s, int nblk, const float* x, const float* w, const float* b, float* y,
                       float* argmax, bool relu) {
    const KernelTable& k = kernels();
    const size_t xb = block::floats(s.ic, s.ih, s.iw, s.lanes), yb = block::floats(s.oc, s.oh / 2, s.ow / 2, s.lanes);
    LineVector<float> derived(block::derived_weight_floats(s, true, false));  // once for all the blocks
    if (!derived.empty()) block::derive_weights(s, w, derived.data());
    const float* wd = derived.empty() ? nullptr : derived.data();
    ThreadPool::instance().parallel_for(nblk, [&](int blk, int thread) {
        block::conv_pool_forward(k, s, x + blk * xb, w, wd, b, relu, y + blk * yb,
                                 argmax ? argmax + blk * yb : nullptr, thread);
    });
}

namespace {
// One partial gradient [dw (oc*K) | db (oc)] per block, computed by block_grad(blk, thread, dw, db) and then summed
// into dw and db in block order: the result does not depend on which thread ran which block.
template <class F>
void sum_block_grads(const ConvShape& s, int nblk, float* dw, float* db, F&& block_grad) {
    const size_t K = size_t(s.ic) * s.kh * s.kw, partial = size_t(s.oc) * K + s.oc;
    float* partials = scratch(0, 5, partial * size_t(nblk));
    ThreadPool::instance().parallel_for(nblk, [&](int blk, int thread) {
        float* part = partials + partial * size_t(blk);
        block_grad(blk, thread, part, part + size_t(s.oc) * K);
    });
    for (int blk = 0; blk < nblk; ++blk) {
        const float* part = partials + partial * size_t(blk);
        for (size_t i = 0; i < size_t(s.oc) * K; ++i) dw[i] += part[i];
        if (db)
            for (int o = 0; o < s.oc; ++o) db[o] += part[size_t(s.oc) * K + o];
    }
}

// The weights of dX as a convolution of padded dY (block::dx_weights), in scratch; for a fused layer (`fused`) that
// reads the forward's instead (block::dx_reads_derived), those.
const float* dx_weights_in_scratch(const KernelTable& k, const ConvShape& s, bool fused, const float* w) {
    if (fused && block::dx_reads_derived(k, s)) {
        float* u = scratch(0, 4, block::derived_weight_floats(s, true, false));
        block::derive_weights(s, w, u);
        return u;
    }
    float* wt = scratch(0, 4, block::dx_weight_floats(k, s));
    block::dx_weights(k, s, w, wt);
    return wt;
}
}  // namespace

void conv_pool_backward(const ConvShape& s, int nblk, const float* x, const float* w, const float* argmax,
                        const float* dy, float* dx, float* dw, float* db) {
    const KernelTable& k = kernels();
    const size_t xb = block::floats(s.ic, s.ih, s.iw, s.lanes), yb = block::floats(s.oc, s.oh / 2, s.ow / 2, s.lanes);
    const bool routed = dx && !block::conv_pool_sparse(k, s, true);  // dX from the routed gradient: wt, dy_pad
    const float* wt = routed ? dx_weights_in_scratch(k, s, true, w) : nullptr;
    std::vector<LineVector<float>> dy_pad;  // per thread, zero border (block::conv_pool_backward)
    if (routed) dy_pad.assign(size_t(ThreadPool::instance().threads()), LineVector<float>(block::padded_dy_floats(s)));
    sum_block_grads(s, nblk, dw, db, [&](int blk, int thread, float* pdw, float* pdb) {
        float* pad = routed ? dy_pad[size_t(thread)].data() : nullptr;
        block::conv_pool_backward(k, s, x + blk * xb, w, wt, argmax + blk * yb, dy + blk * yb, pdw, pdb,
                                  dx ? dx + blk * xb : nullptr, thread, pad);
    });
}

void conv2d_backward(const ConvShape& s, int nblk, const float* x, const float* w, const float* dy, float* dx,
                     float* dw, float* db, ConvAlgo algo) {
    const KernelTable& k = kernels();
    const size_t xb = block::floats(s.ic, s.ih, s.iw, s.lanes), yb = block::floats(s.oc, s.oh, s.ow, s.lanes);
    const bool direct = conv_uses_direct(s, algo);
    const float* wt = dx && direct ? dx_weights_in_scratch(k, s, false, w) : nullptr;
    sum_block_grads(s, nblk, dw, db, [&](int blk, int thread, float* pdw, float* pdb) {
        block::conv_backward(k, s, direct, x + blk * xb, w, wt, dy + blk * yb, pdw, pdb, dx ? dx + blk * xb : nullptr,
                             thread);
    });
}

}  // namespace lenet::ops
