#include "dense_bf16.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "block.h"

namespace lenet::ops {

namespace {
// The pairs of rows (2p, 2p + 1) of m [rows][L] that hold a float other than +-0, into `pairs`, as bf16.h's kp for a
// GEMM whose k runs along those rows; returns how many (bf16.h's np), or -1 where every pair does (the plain sum).
int live_pairs(const float* m, int rows, int L, std::vector<int>& live, std::vector<int>& pairs) {
    if (block::live_rows(m, rows, L, L, live)) return -1;
    pairs.clear();
    for (int r : live)
        if (pairs.empty() || pairs.back() != r / 2) pairs.push_back(r / 2);
    return int(pairs.size());
}
}  // namespace

DenseBf16::DenseBf16(int in, int out, int max_lanes)
    : in_(in), out_(out), max_lanes_(max_lanes), in_k_(round_up(in, 32)), out_k_(round_up(out, 32)),
      in_n_(round_up(in, 16)),
      w_rows_(size_t(round_up(out, 16)) * size_t(in_k_), 0), w_pairs_(size_t(out_k_) * size_t(in_n_), 0) {}

void DenseBf16::refresh(const float* w, int o0, int rows, bool stream) {
    const Bf16Table& t = *t_;
    const float* src = w + size_t(o0) * size_t(in_);
    t.convert(rows, in_, src, in_, 1, w_rows_.data() + size_t(o0) * size_t(in_k_), in_k_, stream);
    t.pairs(rows, in_, src, in_, 1, w_pairs_.data() + size_t(o0) * size_t(in_n_), in_n_, stream);  // o0 even
}

void DenseBf16::begin_batch(const Bf16Table& t, int B, int threads) {
    t_ = &t;
    if (B == batch_ && scratch_.size() >= size_t(threads)) return;
    batch_ = B;
    batch_k_ = round_up(B, 32);
    xt_pairs_.assign(size_t(batch_k_) * size_t(in_n_), 0);  // samples past B stay zero
    scratch_.resize(std::max(scratch_.size(), size_t(threads)));
    for (Scratch& s : scratch_) {
        s.x_pairs.assign(size_t(in_k_) * size_t(max_lanes_), 0);
        s.dyt_lanes.assign(size_t(max_lanes_) * size_t(out_k_), 0);
        s.dyt_rows.assign(size_t(kRefreshRows) * size_t(batch_k_), 0);
    }
}

void DenseBf16::forward(const KernelTable& k, int L, const float* x, const float* b, float* y, int thread) const {
    const Bf16Table& t = *t_;
    Scratch& s = scratch_[size_t(thread)];
    t.pairs(in_, L, x, L, 1, s.x_pairs.data(), max_lanes_, 0);  // pairs past in/2 were zeroed once: K's padding
    // the features that are 0 in every lane (behind a ReLU or a pooling) add nothing
    const int np = live_pairs(x, in_, L, s.live, s.pairs);
    t.gemm(out_, L, in_k_, w_rows_.data(), in_k_, s.x_pairs.data(), max_lanes_, y, L, 0, s.pairs.data(), np);
    if (b) k.bias_add(out_, L, b, y);
}

void DenseBf16::backward(int L, ptrdiff_t col0, const float* x, const float* dy, float* dx, bool gather,
                         int thread) {
    const Bf16Table& t = *t_;
    // x [in][L]: sample col0 + l, feature i at x[i * L + l]; x^T in pairs of samples from column col0 on
    if (gather) t.pairs(L, in_, x, 1, L, xt_pairs_.data() + size_t(col0) * size_t(in_n_), in_n_, 0);
    if (!dx) return;
    Scratch& s = scratch_[size_t(thread)];
    uint16_t* a = s.dyt_lanes.data();  // dy^T [L][out_k_]: lane l's row from dy's column l
    t.convert(L, out_, dy, 1, L, a, out_k_, 0);
    const int np = live_pairs(dy, out_, L, s.live, s.pairs);  // the units that passed no lane's gradient add nothing
    t.gemm(L, in_, out_k_, a, out_k_, w_pairs_.data(), in_n_, dx, L, 1, s.pairs.data(), np);  // dx = (dy^T . W)^T
}

void DenseBf16::dw_rows(int o0, int rows, const float* dyT, float* dw, int thread) {
    const Bf16Table& t = *t_;
    uint16_t* a = scratch_[size_t(thread)].dyt_rows.data();  // [kRefreshRows][batch_k_], columns past B zero
    block::dw_live_rows(in_, batch_, o0, rows, dyT, dw, false, [&](const float* live, int m, float* c, bool) {
        t.convert(m, batch_, live, batch_, 1, a, batch_k_, 0);
        t.gemm(m, in_, batch_k_, a, batch_k_, xt_pairs_.data(), in_n_, c, in_, 0, nullptr, -1);
    });
}

}  // namespace lenet::ops
