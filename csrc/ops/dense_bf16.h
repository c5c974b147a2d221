// A dense layer of the captured training step in bf16 (TrainStep's Precision::Bf16, opt-in): the forward y = W x,
// the input gradient dx = W^T dy and the weight gradient dW = dy x^T take their operands rounded to bfloat16 and sum
// the products in fp32 (kernels/bf16/bf16.h: Intel AMX or AVX512-BF16 where the CPU has them, else the reference
// loops). The weights, their gradient, the bias and its gradient, and the optimiser's state stay fp32: each step
// rounds W afresh. As in fp32 (block::gemm_nn_live_rows, dense_dw_rows), the products of input features that are 0
// in every lane and of units that passed no lane's gradient are left out: the forward and the input gradient sum over
// the pairs of k that are not both 0 (bf16.h's kp: the features of a dead channel are adjacent, a dead unit's
// neighbour often lives), the weight gradient computes only the live units' rows.
// Lanes layout as in block.h: x [in][L], y and dy [out][L], dx [in][L], L a multiple of 16.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "../core/aligned.h"
#include "../kernels/bf16/bf16.h"
#include "../kernels/kernels.h"

namespace lenet::ops {

class DenseBf16 {
public:
    // max_lanes: the widest forward or input gradient (a chunk's lanes).
    DenseBf16(int in, int out, int max_lanes);

    // Before a step's blocks: its bf16 kernels, and the batch of B samples whose x^T the backward gathers for dW, on
    // `threads` threads.
    void begin_batch(const Bf16Table& t, int B, int threads);
    // Rows [o0, o0 + rows) of W [out][in] rounded into the forward's and the input gradient's operands. Every row
    // after begin_batch and before the step's first forward (tasks of kRefreshRows rows may run in parallel).
    // stream: written with cache-bypassing stores (stream_shared_writes: every thread's blocks read these forms in
    // the last step). The MNIST-CoreML-Training graph's two-thread bf16 step on AMD Zen 4: 3403 -> 3321 us (237 of
    // 392 interleaved rounds); the refresh alone took 482 us per step in one slow phase, 104-121 us on one thread.
    static constexpr int kRefreshRows = 32;
    void refresh(const float* w, int o0, int rows, bool stream);

    // y [out][L] = W x + b (b may be null).
    void forward(const KernelTable& k, int L, const float* x, const float* b, float* y, int thread) const;
    // x's lanes gathered into the batch's x^T at samples [col0, col0 + L) (when gather), and dx [in][L] = W^T dy
    // (dx may be null).
    void backward(int L, ptrdiff_t col0, const float* x, const float* dy, float* dx, bool gather, int thread);
    // Rows [o0, o0 + rows) of dW [out][in] = dyT . x^T over the batch (overwritten), dyT [out][B] the batch's fp32
    // output gradient (block::dense_backward gathers it); rows at most kRefreshRows.
    void dw_rows(int o0, int rows, const float* dyT, float* dw, int thread);

private:
    const Bf16Table* t_ = nullptr;       // the step's kernels (begin_batch)
    int in_, out_, max_lanes_;
    int in_k_, out_k_;                   // in and out rounded up to 32: the GEMMs' K
    int in_n_;                           // in rounded up to 16: dW's columns
    int batch_ = 0, batch_k_ = 0;        // B, and B rounded up to 32
    LineVector<uint16_t> w_rows_;        // [out rounded to 16][in_k_]: the forward's A
    // [out_k_ / 2][in_n_][2]: W in pairs of rows, the B of the input gradient, computed as dx^T = dy^T . W (W^T's
    // rows would need a transpose of all of W every step; this way only the small dy^T and dx^T are transposed)
    LineVector<uint16_t> w_pairs_;
    LineVector<uint16_t> xt_pairs_;      // [batch_k_ / 2][in_n_][2]: dW's B, x^T in pairs of samples
    // per thread: the forward's B (x in pairs of features), the input gradient's A (dy^T [max_lanes][out_k_]), dW's
    // A (kRefreshRows rows of dyT), each buffer's padding zero; the live rows and pairs of k of a GEMM (live_pairs)
    struct Scratch {
        LineVector<uint16_t> x_pairs, dyt_lanes, dyt_rows;
        std::vector<int> live, pairs;
    };
    mutable std::vector<Scratch> scratch_;
};

}  // namespace lenet::ops
