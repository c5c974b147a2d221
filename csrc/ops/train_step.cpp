#include "train_step.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "../core/dispatch.h"
#include "../core/threadpool.h"
#include "block.h"
#include "forward.h"
#include "ops.h"

namespace lenet::ops {

namespace {

bool is_conv(const LayerSpec& l) { return l.kind == LayerKind::Conv2d || l.kind == LayerKind::ConvPool; }

size_t weight_floats(const LayerSpec& l) {
    if (is_conv(l)) return size_t(l.s.oc) * l.s.ic * l.s.kh * l.s.kw;
    if (l.kind == LayerKind::Linear) return size_t(l.s.oc) * l.s.ic;
    return 0;
}
size_t bias_floats(const LayerSpec& l) { return l.b ? size_t(l.s.oc) : 0; }
// A layer whose parameters get gradients (a frozen layer's dw and db are null).
bool trainable(const LayerSpec& l) { return l.dw || l.db; }
// Floats of a conv layer's per-block partial gradient: [dw | db], each part only when asked for.
size_t partial_floats(const LayerSpec& l) { return (l.dw ? weight_floats(l) : 0) + (l.db ? bias_floats(l) : 0); }
// The dw and db parts of a conv layer's partial gradient p (null where not computed).
struct ConvGrads {
    float* dw;
    float* db;
};
ConvGrads conv_grads(const LayerSpec& l, float* p) {
    return {l.dw ? p : nullptr, l.db ? p + (l.dw ? weight_floats(l) : 0) : nullptr};
}

}  // namespace

TrainStep::TrainStep(std::vector<LayerSpec> layers, size_t input_floats, int classes)
    : fwd_(std::make_unique<Forward>(std::move(layers), input_floats, classes)) {
    if (fwd_->lanes() != kLanes) throw std::invalid_argument("the training step runs blocks of 16 lanes");
    first_trainable_ = int(fwd_->layers().size());
    for (size_t i = 0; i < fwd_->layers().size(); ++i) {
        const LayerSpec& l = fwd_->layers()[i];
        param_offset_.push_back(param_floats_);
        batch_offset_.push_back(batch_floats_per_sample_);
        if (trainable(l) && first_trainable_ == int(fwd_->layers().size())) first_trainable_ = int(i);
        if (is_conv(l)) param_floats_ += partial_floats(l);
        if (l.kind == LayerKind::ConvPool && i > 0)
            throw std::invalid_argument("a fused conv-pool layer trains only as the first layer (no input gradient)");
        if (l.kind == LayerKind::Linear && trainable(l)) batch_floats_per_sample_ += size_t(l.s.ic) + l.s.oc;
        wt_.emplace_back(fwd_->direct(i) ? weight_floats(l) : 0);
    }
}

TrainStep::~TrainStep() = default;

double TrainStep::run(int nblk, const float* x, const int32_t* label, float scale) {
    return run_blocks(nblk, Input{x, nullptr, nullptr, nullptr, 0}, label, scale);
}
double TrainStep::run(int n, const uint8_t* x, const int64_t* rows, const int32_t* label, float scale) {
    return run_blocks((n + kLanes - 1) / kLanes, Input{nullptr, x, nullptr, rows, n}, label, scale);
}
double TrainStep::run(int n, const float* x, const int64_t* rows, const int32_t* label, float scale) {
    return run_blocks((n + kLanes - 1) / kLanes, Input{nullptr, nullptr, x, rows, n}, label, scale);
}

double TrainStep::run_blocks(int nblk, const Input& x, const int32_t* label, float scale) {
    const KernelTable& k = kernels();
    const Forward& fwd = *fwd_;
    const std::vector<LayerSpec>& layers = fwd.layers();
    const int L = kLanes, n = int(layers.size());
    for (int i = 0; i < n; ++i)
        if (fwd.direct(size_t(i)) && i > 0) block::flip_transpose(layers[size_t(i)].s, layers[size_t(i)].w, wt_[size_t(i)].data());
    partials_.resize(param_floats_ * size_t(nblk));
    const size_t B = size_t(nblk) * L;
    batch_.resize(batch_floats_per_sample_ * B);
    block_loss_.assign(size_t(nblk), 0.0);

    ThreadPool::instance().parallel_for(nblk, [&](int blk, int thread) {
        float* acts = scratch(thread, 2, fwd.act_floats());
        float* grad_a = scratch(thread, 3, fwd.max_floats());
        float* grad_b = scratch(thread, 4, fwd.max_floats());
        float* part = partials_.data() + param_floats_ * size_t(blk);
        const float* in[kMaxLayers + 1];  // in[i]: the input of layer i; in[n]: the logits
        if (x.blocks) {
            in[0] = x.blocks + fwd.input_floats() * size_t(blk);
        } else {  // this block's samples, packed here (scratch slot 5: the block's input until its backward ends)
            const size_t F = fwd.input_floats() / L;
            const int first = blk * L, count = std::min(L, x.n - first);
            float* packed = scratch(thread, 5, fwd.input_floats());
            auto pack_from = [&](const auto* samples) {  // rows index the whole set; without, the block's are next
                if (x.rows) block::pack(count, F, L, samples, x.rows + first, packed);
                else block::pack(count, F, L, samples + size_t(first) * F, nullptr, packed);
            };
            if (x.pixels) pack_from(x.pixels);
            else pack_from(x.samples);
            in[0] = packed;
        }
        fwd.run_block(k, in, acts, thread);
        // ---- loss: dlogits into grad_a
        float loss[kLanes];
        k.softmax_xent(fwd.classes(), L, in[size_t(n)], label + size_t(blk) * L, scale, loss, grad_a);
        double sum = 0;
        for (int l = 0; l < L; ++l) sum += loss[l];
        block_loss_[size_t(blk)] = sum;
        // ---- backward: dy in grad_a, dx into grad_b, then swap; it stops at the first layer with gradients to
        // compute (below it, frozen layers need no input gradient)
        for (int i = n - 1; i >= first_trainable_; --i) {
            const LayerSpec& l = layers[size_t(i)];
            const float* x_in = in[size_t(i)];
            const float* y = in[size_t(i) + 1];
            float* dx = i > first_trainable_ ? grad_b : nullptr;
            const ptrdiff_t cnt = ptrdiff_t(fwd.out_floats(size_t(i)));
            switch (l.kind) {
                case LayerKind::Conv2d: {
                    const ConvGrads g = conv_grads(l, part + param_offset_[size_t(i)]);  // this block's partial
                    block::conv_backward(k, l.s, fwd.direct(size_t(i)), x_in, l.w, wt_[size_t(i)].data(), grad_a, g.dw,
                                         g.db, dx, thread);
                    break;
                }
                case LayerKind::MaxPool:
                case LayerKind::AvgPool:
                    if (!dx) break;
                    if (!pool_windows_tile(&l.s)) std::memset(dx, 0, block::floats(l.s.ic, l.s.ih, l.s.iw, L) * sizeof(float));
                    if (l.kind == LayerKind::MaxPool) k.maxpool_bwd(&l.s, x_in, y, grad_a, dx, l.relu);
                    else k.avgpool_bwd(&l.s, grad_a, dx);
                    break;
                case LayerKind::Relu: if (dx) k.relu_bwd(cnt, y, grad_a, dx); break;
                case LayerKind::Tanh: if (dx) k.tanh_bwd(cnt, y, grad_a, dx); break;
                case LayerKind::Flatten: dx = grad_a; break;  // same memory, new shape
                case LayerKind::ConvPool: {  // the first layer: weight and bias gradients only
                    const ConvGrads g = conv_grads(l, part + param_offset_[size_t(i)]);
                    block::conv_pool_backward(k, l.s, l.relu, x_in, y, fwd.argmax(size_t(i), acts), grad_a, g.dw, g.db,
                                              thread);
                    break;
                }
                case LayerKind::Linear: {  // gathers x^T and dy for the batch-wide dW below (trainable layers)
                    float* xT = trainable(l) ? batch_.data() + batch_offset_[size_t(i)] * B : nullptr;
                    block::dense_backward(k, L, l.s.ic, l.s.oc, blk, ptrdiff_t(B), x_in, l.w, grad_a, dx, xT,
                                          xT ? xT + size_t(l.s.ic) * B : nullptr);
                    break;
                }
            }
            if (dx && dx != grad_a) std::swap(grad_a, grad_b);
        }
    });

    // Then, in one parallel pass: the convolution gradients summed over blocks in block order (split by
    // parameter range), and each dense layer's dW = dy [out][B] . x^T [B][in] as one GEMM (split by rows).
    std::vector<Task>& tasks = tasks_;  // layer -1: a range of the conv partials; else rows of a dense dW
    tasks.clear();
    constexpr size_t kChunk = 4096, kRows = 16;
    for (size_t b = 0; b < param_floats_; b += kChunk) tasks.push_back({-1, b, std::min(param_floats_, b + kChunk)});
    for (int i = 0; i < n; ++i)
        if (layers[size_t(i)].kind == LayerKind::Linear && trainable(layers[size_t(i)]))
            for (size_t r = 0; r < size_t(layers[size_t(i)].s.oc); r += kRows)
                tasks.push_back({i, r, std::min(size_t(layers[size_t(i)].s.oc), r + kRows)});
    float* sums = scratch(0, 6, param_floats_);
    ThreadPool::instance().parallel_for(int(tasks.size()), [&](int t, int) {
        const Task task = tasks[size_t(t)];
        if (task.layer < 0) {
            std::memcpy(sums + task.begin, partials_.data() + task.begin, (task.end - task.begin) * sizeof(float));
            for (int blk = 1; blk < nblk; ++blk) {
                const float* p = partials_.data() + param_floats_ * size_t(blk);
                for (size_t j = task.begin; j < task.end; ++j) sums[j] += p[j];
            }
            return;
        }
        const LayerSpec& l = layers[size_t(task.layer)];
        const float* xT = batch_.data() + batch_offset_[size_t(task.layer)] * B;
        block::dense_dw_rows(k, l.s.ic, ptrdiff_t(B), int(task.begin), int(task.end - task.begin), xT,
                             xT + size_t(l.s.ic) * B, l.dw, l.db, false);
    });
    for (int i = 0; i < n; ++i) {
        const LayerSpec& l = layers[size_t(i)];
        if (!is_conv(l)) continue;
        const size_t wf = l.dw ? weight_floats(l) : 0;
        if (l.dw) std::memcpy(l.dw, sums + param_offset_[size_t(i)], wf * sizeof(float));
        if (l.db) std::memcpy(l.db, sums + param_offset_[size_t(i)] + wf, bias_floats(l) * sizeof(float));
    }
    double total = 0;
    for (double v : block_loss_) total += v;
    return total;
}

}  // namespace lenet::ops
