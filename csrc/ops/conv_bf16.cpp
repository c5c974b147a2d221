#include "conv_bf16.h"

#include <cstring>

#include "../core/threadpool.h"

namespace lenet::ops {

namespace {
int round_up(int n, int m) { return (n + m - 1) / m * m; }
}  // namespace

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
                t.convert(s.oh, row, src, ptrdiff_t(iwp) * L, 1, a + size_t(r) * P32, row);
                if (P32 > P) std::memset(a + size_t(r) * P32 + P, 0, size_t(P32 - P) * sizeof(uint16_t));
            }
    std::memset(a + size_t(rows) * P32, 0, size_t(round_up(rows, 16) - rows) * P32 * sizeof(uint16_t));
    // B = dy^T in pairs [P32 / 2][oc16][2]: k = (output row, column, lane), consecutive lanes paired; each output
    // row's `row` values are even in number, so every row starts a pair.
    uint16_t* b = reinterpret_cast<uint16_t*>(scratch(thread, kConvBf16SlotB, size_t(P32) * oc16 / 2));
    if (P32 > P || oc16 > s.oc) std::memset(b, 0, size_t(P32) * oc16 * sizeof(uint16_t));
    for (int oy = 0; oy < s.oh; ++oy)
        t.pairs(row, s.oc, dy + (size_t(oy + bh) * dyw + bw) * L, 1, ptrdiff_t(dyh) * dyw * L,
                b + size_t(oy) * row * oc16, oc16);
    t.gemm(rows, s.oc, P32, a, P32, b, oc16, dw, rows, 1);  // dw [oc][rows] = (X_col . dy^T)^T
}

}  // namespace lenet::ops
