#include "conv_bf16.h"

#include <cstring>

#include "../core/aligned.h"
#include "../core/threadpool.h"

namespace lenet::ops {

void conv_dw_bf16(const Bf16Table& t, const ConvShape& s, const float* xpad, const float* dy, int bh, int bw,
                  float* dw, int thread) {
    const int L = s.lanes, rows = s.ic * s.kh * s.kw;  // dw^T's rows: (input channel, ky, kx)
    const int ihp = s.oh + s.kh - 1, iwp = s.ow + s.kw - 1, dyh = s.oh + 2 * bh, dyw = s.ow + 2 * bw;
    const int row = s.ow * L, P = s.oh * row, P32 = round_up(P, 32), oc16 = round_up(s.oc, 16);
    // A = X_col [rows rounded to 16][P32]: row (c, ky, kx) holds, output row after output row, the input pixels that
    // meet that weight; the columns past P and the rows past `rows` zero (K's padding, and finite for the GEMM).
    uint16_t* a = reinterpret_cast<uint16_t*>(scratch(thread, kConvBf16SlotA, size_t(round_up(rows, 16)) * P32 / 2));
    for (int c = 0, r = 0; c < s.ic; ++c)
        for (int ky = 0; ky < s.kh; ++ky)
            for (int kx = 0; kx < s.kw; ++kx, ++r) {
                const float* src = xpad + ((size_t(c) * ihp + ky) * iwp + kx) * L;
                t.convert(s.oh, row, src, ptrdiff_t(iwp) * L, 1, a + size_t(r) * P32, row, 0);
                if (P32 > P) std::memset(a + size_t(r) * P32 + P, 0, size_t(P32 - P) * sizeof(uint16_t));
            }
    std::memset(a + size_t(rows) * P32, 0, size_t(round_up(rows, 16) - rows) * P32 * sizeof(uint16_t));
    // B = dy^T in pairs [P32 / 2][oc16][2]: k = (output row, column, lane), consecutive lanes paired; each output
    // row's `row` values are even in number, so every row starts a pair.
    uint16_t* b = reinterpret_cast<uint16_t*>(scratch(thread, kConvBf16SlotB, size_t(P32) * oc16 / 2));
    if (P32 > P || oc16 > s.oc) std::memset(b, 0, size_t(P32) * oc16 * sizeof(uint16_t));
    for (int oy = 0; oy < s.oh; ++oy)
        t.pairs(row, s.oc, dy + (size_t(oy + bh) * dyw + bw) * L, 1, ptrdiff_t(dyh) * dyw * L,
                b + size_t(oy) * row * oc16, oc16, 0);
    t.gemm(rows, s.oc, P32, a, P32, b, oc16, dw, rows, 1, nullptr, -1);  // dw [oc][rows] = (X_col . dy^T)^T
}

// Wt [ic rounded to 16][K32]: row c, column (o, ky, kx) = w[o][c][kh-1-ky][kw-1-kx]; columns past K = oc kh kw
// (the GEMM's padding) and rows past ic zero. After it, w rounded in its own order, from which Wt is gathered.
size_t conv_dx_weights_bf16_count(const ConvShape& s) {
    return size_t(round_up(s.ic, 16)) * size_t(round_up(s.oc * s.kh * s.kw, 32)) + size_t(s.oc) * s.ic * s.kh * s.kw;
}

void conv_dx_weights_bf16(const Bf16Table& t, const ConvShape& s, const float* w, uint16_t* wt) {
    const int taps = s.kh * s.kw, K32 = round_up(s.oc * taps, 32), n = s.oc * s.ic * taps;
    uint16_t* rounded = wt + (conv_dx_weights_bf16_count(s) - size_t(n));
    t.convert(1, n, w, n, 1, rounded, n, 0);
    std::memset(wt, 0, (conv_dx_weights_bf16_count(s) - size_t(n)) * sizeof(uint16_t));
    for (int c = 0; c < s.ic; ++c)
        for (int o = 0; o < s.oc; ++o)
            for (int tap = 0; tap < taps; ++tap)  // w's taps in reverse: the flip
                wt[size_t(c) * K32 + size_t(o) * taps + tap] = rounded[(size_t(o) * s.ic + c) * taps + taps - 1 - tap];
}

void conv_dx_bf16(const Bf16Table& t, const ConvShape& s, const uint16_t* wt, const float* dy_pad, float* dx,
                  int thread) {
    const int L = s.lanes, K = s.oc * s.kh * s.kw, K32 = round_up(K, 32);
    const int bh = s.kh - 1 - s.ph, bw = s.kw - 1 - s.pw;                  // dy_pad's border
    const int dyh = s.oh + 2 * bh, dyw = s.ow + 2 * bw, row = s.iw * L;  // dy_pad's size; one dx row
    const int N = s.ih * row;
    // B = D_col in pairs [K32 / 2][N][2]: k = (o, ky, kx), column (y, x, l) = dy_pad[o][y + ky][x + kx][l]; each
    // pair of k and each output row y is one call, its two sources `rs` apart (one pixel when only kx differs).
    uint16_t* b = reinterpret_cast<uint16_t*>(scratch(thread, kConvBf16SlotB, size_t(K32) * N / 2));
    auto source = [&](int k) {
        const int o = k / (s.kh * s.kw), ky = k / s.kw % s.kh, kx = k % s.kw;
        return dy_pad + ((size_t(o) * dyh + ky) * dyw + kx) * L;
    };
    for (int k = 0; k < K; k += 2) {
        const float* a = source(k);
        const ptrdiff_t rs = k + 1 < K ? source(k + 1) - a : 0;
        uint16_t* dst = b + size_t(k / 2) * N * 2;  // pair k / 2's row of B
        for (int y = 0; y < s.ih; ++y)
            t.pairs(k + 1 < K ? 2 : 1, row, a + size_t(y) * dyw * L, rs, 1, dst + size_t(y) * row * 2, N, 0);
    }
    const int pairs_done = (K + 1) / 2;
    std::memset(b + size_t(pairs_done) * N * 2, 0, size_t(K32 / 2 - pairs_done) * N * 2 * sizeof(uint16_t));
    t.gemm(s.ic, N, K32, wt, K32, b, N, dx, N, 0, nullptr, -1);
}

}  // namespace lenet::ops
