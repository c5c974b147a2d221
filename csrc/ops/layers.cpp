// Pooling, dense layers, activations, loss and optimiser updates over whole batches.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../core/aligned.h"
#include "../core/dispatch.h"
#include "../core/threadpool.h"
#include "block.h"
#include "ops.h"

namespace lenet::ops {

namespace {

// Splits [0, n) into one contiguous range per thread (multiples of 64 floats) and calls f(begin, end).
template <class F>
void parallel_ranges(ptrdiff_t n, ptrdiff_t min_per_thread, F&& f) {
    ThreadPool& pool = ThreadPool::instance();
    ptrdiff_t parts = n / min_per_thread;
    if (parts < 1) parts = 1;
    if (parts > pool.threads()) parts = pool.threads();
    const ptrdiff_t chunk = ((n + parts - 1) / parts + 63) / 64 * 64;
    pool.parallel_for(int(parts), [&](int part, int) {
        const ptrdiff_t begin = part * chunk, end = begin + chunk < n ? begin + chunk : n;
        if (begin < end) f(begin, end);
    });
}

constexpr ptrdiff_t kMinEltwisePerThread = 1 << 14;

}  // namespace

void pool2d_forward(PoolKind kind, const ConvShape& s, int nblk, const float* x, float* y, bool relu) {
    const KernelTable& k = kernels();
    const size_t xb = size_t(s.ic) * s.ih * s.iw * s.lanes, yb = size_t(s.ic) * s.oh * s.ow * s.lanes;
    ThreadPool::instance().parallel_for(nblk, [&](int blk, int) {
        if (kind == PoolKind::Max) k.maxpool_fwd(&s, x + blk * xb, y + blk * yb, relu);
        else k.avgpool_fwd(&s, x + blk * xb, y + blk * yb);
    });
}

void pool2d_backward(PoolKind kind, const ConvShape& s, int nblk, const float* x, const float* y, const float* dy,
                     float* dx, bool relu) {
    const KernelTable& k = kernels();
    const size_t xb = size_t(s.ic) * s.ih * s.iw * s.lanes, yb = size_t(s.ic) * s.oh * s.ow * s.lanes;
    ThreadPool::instance().parallel_for(nblk, [&](int blk, int) {
        float* dxb = dx + blk * xb;
        if (!pool_windows_tile(&s)) std::memset(dxb, 0, xb * sizeof(float));  // else the kernel writes all of dx
        if (kind == PoolKind::Max) k.maxpool_bwd(&s, x + blk * xb, y + blk * yb, dy + blk * yb, dxb, relu);
        else k.avgpool_bwd(&s, dy + blk * yb, dxb);
    });
}

void linear_forward(int nblk, int L, int in, int out, const float* x, const float* w, const float* b, float* y,
                    bool relu) {
    const KernelTable& k = kernels();
    ThreadPool::instance().parallel_for(nblk, [&](int blk, int) {
        float* yb = y + size_t(blk) * out * L;
        block::dense_forward(k, L, in, out, x + size_t(blk) * in * L, w, b, yb);
        if (relu) k.relu_fwd(ptrdiff_t(out) * L, yb, yb);
    });
}

namespace block {

void dense_forward(const KernelTable& k, int L, int in, int out, const float* x, const float* w, const float* b,
                   float* y, std::vector<int>* live_x) {
    if (L == 1) {  // one sample: dot products along `in` fill the vectors (one lane would not), added to the bias
        if (b) std::memcpy(y, b, size_t(out) * sizeof(float));
        k.gemm_nt(out, 1, in, w, in, x, in, y, 1, b != nullptr);
        if (live_x) live_rows(x, in, 1, 1, *live_x);
        return;
    }
    gemm_nn_live_rows(k, out, L, in, w, in, 1, x, y, live_x);
    if (b) k.bias_add(out, L, b, y);
}

bool live_rows(const float* m, int rows, int n, ptrdiff_t ld, std::vector<int>& live) {
    live.clear();
    for (int r = 0; r < rows; ++r) {  // the bits of every float of the row but their signs, or'ed: 0 for zeros only
        const uint32_t* row = reinterpret_cast<const uint32_t*>(m + r * ld);
        uint32_t bits = 0;
        for (int i = 0; i < n; ++i) bits |= row[i];
        if (bits & 0x7fffffffu) live.push_back(r);
    }
    return int(live.size()) == rows;
}

void gemm_nn_live_rows(const KernelTable& k, int M, int N, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                       const float* B, float* C, std::vector<int>* live) {
    thread_local std::vector<int> rows;
    if (!live) live = &rows;
    const bool all = live_rows(B, K, N, N, *live);  // (then the plain sum: the same result, bit for bit, as before)
    k.gemm_nn(M, N, int(live->size()), A, rsa, csa, B, N, C, N, 0, all ? nullptr : live->data());
}

void dense_backward(const KernelTable& k, int L, int in, int out, ptrdiff_t col0, ptrdiff_t B, const float* x,
                    const float* w, const float* dy, float* dx, float* xP, float* dyT,
                    const std::vector<int>* live_x) {
    // (the other threads read these gathers in the last step's weight gradient)
    if (xP || dyT) k.dense_gather(L, in, out, col0, B, kDensePanel, x, dy, xP, dyT, stream_shared_writes());
    if (dx) dense_dx(k, L, in, out, w, live_x, dy, dx);
}

void dense_dx(const KernelTable& k, int L, int in, int out, const float* w, const std::vector<int>* live_x,
              const float* dy, float* dx) {
    if (!live_x || int(live_x->size()) == in) return gemm_nn_live_rows(k, in, L, out, w, 1, in, dy, dx);
    thread_local std::vector<int> units;
    const bool all_units = live_rows(dy, out, L, L, units);
    const int* ks = all_units ? nullptr : units.data();
    // runs [r0, r1) of rows to compute: from a live row of x to the next gap of kDeadRowRun rows or more
    const std::vector<int>& rows = *live_x;
    int done = 0;  // the rows below it are written
    for (size_t f = 0; f < rows.size();) {
        size_t e = f + 1;
        while (e < rows.size() && rows[e] - rows[e - 1] <= kDeadRowRun) ++e;
        const int r0 = rows[f], r1 = rows[e - 1] + 1;
        std::memset(dx + size_t(done) * L, 0, size_t(r0 - done) * L * sizeof(float));
        k.gemm_nn(r1 - r0, L, int(units.size()), w + r0, 1, in, dy, L, dx + size_t(r0) * L, L, 0, ks);
        done = r1;
        f = e;
    }
    std::memset(dx + size_t(done) * L, 0, size_t(in - done) * L * sizeof(float));
}

void dense_dw_rows(const KernelTable& k, int in, ptrdiff_t B, int o0, int rows, const float* xP, const float* dyT,
                   float* dw, float* db, bool accumulate) {
    constexpr int P = kDensePanel;
    if (dw)
        dw_live_rows(in, B, o0, rows, dyT, dw, accumulate, [&](const float* a, int m, float* c, bool add) {
            for (int i0 = 0; i0 < in; i0 += P)
                k.gemm_nn(m, std::min(P, in - i0), int(B), a, B, 1, xP + i0 * B, P, c + i0, in, add, nullptr);
        });
    if (!db) return;
    if (!accumulate) std::memset(db + o0, 0, size_t(rows) * sizeof(float));
    k.bias_grad(rows, B, dyT + o0 * B, db + o0);
}

}  // namespace block

// dW = dy . x^T reduces over the whole batch: the blocks are first gathered into dyT [out][B] (each lane row
// copied whole) and xP (x transposed, in panels), so dW is a plain gemm_nn with K = B, vectorised along `in` with
// no horizontal sums; it is split by rows of dW, so no partial sums are needed.
void linear_backward(int nblk, int L, int in, int out, const float* x, const float* w, const float* dy, float* dx,
                     float* dw, float* db, const float* relu_y) {
    const KernelTable& k = kernels();
    ThreadPool& pool = ThreadPool::instance();
    const ptrdiff_t B = ptrdiff_t(nblk) * L, block_out = ptrdiff_t(out) * L;
    float* dyT = scratch(0, 0, size_t(out) * B);
    float* xP = scratch(0, 1, size_t(block::dense_xT_floats(in) * B));
    pool.parallel_for(nblk, [&](int blk, int thread) {
        const float* dyb = dy + blk * block_out;
        if (relu_y) {  // the ReLU's backward first: dy where it passed its input, else 0
            float* masked = scratch(thread, 6, size_t(block_out));
            k.relu_bwd(block_out, relu_y + blk * block_out, dyb, masked);
            dyb = masked;
        }
        block::dense_backward(k, L, in, out, ptrdiff_t(blk) * L, B, x + size_t(blk) * in * L, w, dyb,
                              dx ? dx + size_t(blk) * in * L : nullptr, xP, dyT);
    });
    const int rows_per_task = block::dense_dw_task_rows(in, out), tasks = (out + rows_per_task - 1) / rows_per_task;
    pool.parallel_for(tasks, [&](int task, int) {
        const int o0 = task * rows_per_task, rows = out - o0 < rows_per_task ? out - o0 : rows_per_task;
        block::dense_dw_rows(k, in, B, o0, rows, xP, dyT, dw, db, true);
    });
}

void activation_forward(Activation a, ptrdiff_t n, const float* x, float* y) {
    const KernelTable& k = kernels();
    parallel_ranges(n, kMinEltwisePerThread, [&](ptrdiff_t b, ptrdiff_t e) {
        (a == Activation::Relu ? k.relu_fwd : k.tanh_fwd)(e - b, x + b, y + b);
    });
}

void activation_backward(Activation a, ptrdiff_t n, const float* y, const float* dy, float* dx) {
    const KernelTable& k = kernels();
    parallel_ranges(n, kMinEltwisePerThread, [&](ptrdiff_t b, ptrdiff_t e) {
        (a == Activation::Relu ? k.relu_bwd : k.tanh_bwd)(e - b, y + b, dy + b, dx + b);
    });
}

void softmax_xent(int nblk, int K, int L, const float* logits, const int32_t* label, float scale, float* loss,
                  float* dlogits) {
    const KernelTable& k = kernels();
    ThreadPool::instance().parallel_for(1, [&](int, int) {  // tiny: one thread, inside the pool for FTZ
        for (int blk = 0; blk < nblk; ++blk)
            k.softmax_xent(K, L, logits + size_t(blk) * K * L, label + size_t(blk) * L, scale, loss + size_t(blk) * L,
                           dlogits + size_t(blk) * K * L);
    });
}

void Update::apply(const KernelTable& k, const float* grad, ptrdiff_t count) const {
    const ptrdiff_t o = grad - g;
    const int stream = stream_shared_writes();  // (every thread's blocks read the weights in the step)
    if (kind == Kind::Sgd) k.sgd_update(count, w + o, grad, s1 + o, lr, momentum, weight_decay, nesterov, stream);
    else k.adam_update(count, w + o, grad, s1 + o, s2 + o, lr, b1, b2, eps, weight_decay, step, stream);
}

bool stream_shared_writes() { return ThreadPool::instance().threads() > 1; }

void apply_update(const Update& u) {
    const KernelTable& k = kernels();
    parallel_ranges(u.n, 1 << 16, [&](ptrdiff_t b, ptrdiff_t e) { u.apply(k, u.g + b, e - b); });
}

double fma_peak_gflops(double seconds) {
    const KernelTable& k = kernels();
    ThreadPool& pool = ThreadPool::instance();
    const int tasks = 64 * pool.threads();  // many short tasks: claimed dynamically, every thread stays busy
    float sinks[ThreadPool::kMaxThreads] = {};
    std::vector<double> flops(size_t(tasks), 0.0);
    double elapsed = 0;
    int64_t iters = 1000;
    for (;;) {
        const auto start = std::chrono::steady_clock::now();
        pool.parallel_for(tasks, [&](int task, int thread) { flops[size_t(task)] = k.fma_loop(iters, &sinks[thread]); });
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (elapsed >= seconds) break;
        iters = elapsed < seconds / 16 ? iters * 8 : int64_t(double(iters) * seconds / elapsed * 1.05) + 1;
    }
    double total = 0;
    for (double f : flops) total += f;
    return total / elapsed * 1e-9;
}

}  // namespace lenet::ops
