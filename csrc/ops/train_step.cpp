#include "train_step.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "../core/aligned.h"
#include "../core/dispatch.h"
#include "../core/threadpool.h"
#include "../kernels/bf16/bf16_dispatch.h"
#include "block.h"
#include "conv_bf16.h"
#include "dense_bf16.h"
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
// A conv layer's per-block partial gradient is [dw | db], each part only when asked for: db starts here.
size_t partial_db_offset(const LayerSpec& l) { return l.dw ? weight_floats(l) : 0; }
size_t partial_floats(const LayerSpec& l) { return partial_db_offset(l) + (l.db ? bias_floats(l) : 0); }
// The dw and db parts of a conv layer's partial gradient p (null where not computed).
struct ConvGrads {
    float* dw;
    float* db;
};
ConvGrads conv_grads(const LayerSpec& l, float* p) {
    return {l.dw ? p : nullptr, l.db ? p + partial_db_offset(l) : nullptr};
}

// rows x lanes floats from src to dst, rows src_ld and dst_ld floats apart: one block's lanes into or out of a chunk's
// [rows][N] (or a plain copy, when both are L apart).
void copy_lanes(size_t rows, int lanes, const float* src, size_t src_ld, float* dst, size_t dst_ld) {
    if (src_ld == size_t(lanes) && dst_ld == size_t(lanes)) {
        std::memcpy(dst, src, rows * size_t(lanes) * sizeof(float));
        return;
    }
    for (size_t r = 0; r < rows; ++r) std::memcpy(dst + r * dst_ld, src + r * src_ld, size_t(lanes) * sizeof(float));
}

}  // namespace

TrainStep::TrainStep(std::vector<LayerSpec> layers, size_t input_floats, int classes, Precision precision)
    : fwd_(std::make_unique<Forward>(std::move(layers), input_floats, classes)) {
    if (fwd_->lanes() != kLanes) throw std::invalid_argument("the training step runs blocks of 16 lanes");
    first_trainable_ = int(fwd_->layers().size());
    for (size_t i = 0; i < fwd_->layers().size(); ++i) {
        const LayerSpec& l = fwd_->layers()[i];
        param_offset_.push_back(param_floats_);
        batch_offset_.push_back(batch_floats_per_sample_);
        if (trainable(l) && first_trainable_ == int(fwd_->layers().size())) first_trainable_ = int(i);
        if (is_conv(l)) {
            if (l.dw) conv_parts_.push_back({param_floats_, weight_floats(l), l.dw, fwd_->derived(i) ? int(i) : -1});
            if (l.db) conv_parts_.push_back({param_floats_ + partial_db_offset(l), bias_floats(l), l.db, -1});
            param_floats_ += partial_floats(l);
        }
        if (l.kind == LayerKind::Linear && trainable(l)) {  // x^T panels (in bf16, in the layer's DenseBf16), dy
            const bool bf16 = precision == Precision::Bf16;
            batch_floats_per_sample_ += size_t(bf16 ? 0 : block::dense_xT_floats(l.s.ic)) + size_t(l.s.oc);
        }
    }
    dy_pad_.resize(fwd_->layers().size());
    wt_.resize(fwd_->layers().size());
    wt_bf16_.resize(fwd_->layers().size());
    while (flatten_ < fwd_->layers().size() && fwd_->layers()[flatten_].kind != LayerKind::Flatten) ++flatten_;
    if (flatten_ == fwd_->layers().size()) throw std::invalid_argument("the training step needs a flatten layer");
    size_t flat_weight_bytes = 0;
    for (size_t i = flatten_; i < fwd_->layers().size(); ++i) {
        const LayerKind kind = fwd_->layers()[i].kind;
        const bool flat = kind == LayerKind::Flatten || kind == LayerKind::Linear || kind == LayerKind::Relu ||
                          kind == LayerKind::Tanh;
        if (!flat)
            throw std::invalid_argument("the training step needs a flatten, then only linear, ReLU and tanh layers");
        flat_width_ = std::max(flat_width_, fwd_->out_floats(i) / kLanes);
        flat_weight_bytes += weight_floats(fwd_->layers()[i]) * sizeof(float);
    }
    max_chunk_ = flat_weight_bytes > kChunkWeightBytes ? kMaxChunk : 1;
    if (precision == Precision::Bf16) {
        bf16_.resize(fwd_->layers().size());
        for (size_t i = flatten_; i < fwd_->layers().size(); ++i) {
            const LayerSpec& l = fwd_->layers()[i];
            if (l.kind == LayerKind::Linear)
                bf16_[i] = std::make_unique<DenseBf16>(l.s.ic, l.s.oc, max_chunk_ * kLanes);
        }
        for (const auto& d : bf16_) bf16_view_.push_back(d.get());
    }
}

TrainStep::~TrainStep() = default;

namespace {
// A conv-pool layer whose input gradient runs well in bf16 (TrainStep::bf16_dx).
bool bf16_dx_shape(const LayerSpec& l) { return l.s.ic >= 16 && l.s.kh * l.s.kw <= 4; }
}  // namespace

bool TrainStep::bf16_conv(size_t i) const {
    const LayerSpec& l = fwd_->layers()[i];
    if (bf16_.empty() || !bf16_table_ || l.kind != LayerKind::ConvPool) return false;
    if (!block::conv_pool_sparse(kernels(), l.s, false)) return true;
    return bf16_table_->dense_over_sparse && bf16_dx_shape(l);
}

bool TrainStep::bf16_dx(size_t i) const { return bf16_conv(i) && bf16_dx_shape(fwd_->layers()[i]); }

std::vector<int> TrainStep::bf16_conv_layers() const {
    std::vector<int> out;
    for (size_t i = 0; i < fwd_->layers().size(); ++i)  // (below the first layer with an input gradient, none)
        if (int(i) > first_trainable_ && bf16_conv(i)) out.push_back(int(i));
    return out;
}

bool TrainStep::reads_derived(size_t i) const {
    const LayerSpec& l = fwd_->layers()[i];
    return l.kind == LayerKind::ConvPool && block::dx_reads_derived(kernels(), l.s);
}

bool TrainStep::direct_dx(size_t i) const {
    const LayerSpec& l = fwd_->layers()[i];
    if (l.kind == LayerKind::ConvPool) return bf16_conv(i) || !block::conv_pool_sparse(kernels(), l.s, true);
    return fwd_->direct(i);
}

bool TrainStep::dx_masked(size_t i) const {
    for (size_t j = i; j-- > 0;) {
        const LayerSpec& l = fwd_->layers()[j];
        switch (l.kind) {
            case LayerKind::Flatten: continue;  // the same floats
            case LayerKind::Relu: return true;  // relu_bwd passes dy only where y > 0
            case LayerKind::ConvPool: return l.relu;
            case LayerKind::MaxPool:            // fused with a ReLU, or a max of 0 whose argmax is a 0 of the layer below
                if (l.relu) return true;
                continue;
            default: return false;
        }
    }
    return false;
}

void TrainStep::check_update(const Update& u) const {
    if (!u.w || !u.g || !u.s1 || (u.kind == Update::Kind::Adam && !u.s2))
        throw std::invalid_argument("the optimiser update lacks a buffer");
    // The flat buffers hold the trained parameters one after another, each from the start of a line (lenet/optim.py,
    // the C API): in order of offset, each starts on the line after the previous one's end, and the last one's line
    // ends the buffers. So the update touches nothing but these parameters and the zero padding between them.
    std::vector<std::pair<ptrdiff_t, size_t>> ranges;  // (offset, floats) of each trained parameter
    auto add = [&](const float* param, const float* grad, size_t floats) {
        const ptrdiff_t o = grad - u.g;
        if (o < 0 || o + ptrdiff_t(floats) > u.n || param != u.w + o)
            throw std::invalid_argument("the optimiser's parameters are not the captured model's trainable ones "
                                        "(each gradient must sit at its parameter's offset in the flat buffers)");
        ranges.emplace_back(o, floats);
    };
    for (const LayerSpec& l : fwd_->layers()) {
        if (l.dw) add(l.w, l.dw, weight_floats(l));
        if (l.db) add(l.b, l.db, bias_floats(l));
    }
    std::sort(ranges.begin(), ranges.end());
    size_t end = 0;  // of the previous parameter's last line
    for (const auto& [o, floats] : ranges) {
        if (size_t(o) != end)
            throw std::invalid_argument("the optimiser's flat buffers must hold the captured model's trainable "
                                        "parameters only, each from the line after the previous one's end: one "
                                        "starts at float " + std::to_string(o) + ", expected " + std::to_string(end));
        end = to_line(size_t(o) + floats);
    }
    if (end != size_t(u.n))
        throw std::invalid_argument("the optimiser holds " + std::to_string(u.n) + " floats of parameters, the " +
                                    "captured model trains " + std::to_string(end) + ": they must be the same");
}

double TrainStep::run(int nblk, const float* x, const int32_t* label, float scale, const Update* update) {
    return run_blocks(nblk, Input{x, nullptr, nullptr, nullptr, 0}, label, scale, update);
}
double TrainStep::run(int n, const uint8_t* x, const int64_t* rows, const int32_t* label, float scale,
                      const Update* update) {
    return run_blocks((n + kLanes - 1) / kLanes, Input{nullptr, x, nullptr, rows, n}, label, scale, update);
}
double TrainStep::run(int n, const float* x, const int64_t* rows, const int32_t* label, float scale,
                      const Update* update) {
    return run_blocks((n + kLanes - 1) / kLanes, Input{nullptr, nullptr, x, rows, n}, label, scale, update);
}

// Reads the flat layers' weights into this core's caches, one float per cache line. On two or more threads each
// step's update leaves a share of them modified in another core's cache, and the dense GEMMs then fetched those
// lines one demand miss at a time; this sequential read keeps many misses in flight. Only where the flat weights stay
// in L2 (chunks of one block), else they would not stay until used. LeNet-5 on 2 threads of the Intel VM, timer
// build, per thread and step: the 400 -> 120 layer's forward 31-33 -> 25 us, the read 9-10 us, the chunks 14-16 us
// shorter. Once per thread and step, before its first chunk: its later chunks find the weights still in its L2
// (LeNet-5's step on 2 threads of the Intel VM 0.6% and 1.6% shorter than with a read before every chunk).
void TrainStep::warm_flat_weights() const {
    float sum = 0.0f;
    for (size_t i = flatten_; i < fwd_->layers().size(); ++i) {
        const LayerSpec& l = fwd_->layers()[i];
        if (l.kind != LayerKind::Linear) continue;
        for (size_t f = 0, n = weight_floats(l); f < n; f += kLineFloats) sum += l.w[f];
    }
    [[maybe_unused]] static volatile float sink;  // keeps the reads
    sink = sum;
}

void TrainStep::run_chunk(int b0, int nb, int chunk, const Input& x, const int32_t* label, float scale, int thread) {
    const KernelTable& k = kernels();
    const Forward& fwd = *fwd_;
    const int L = kLanes, N = nb * L, n = int(fwd.layers().size()), flat = int(flatten_);
    const size_t F = fwd.out_floats(flatten_) / L;  // flat features per sample
    // Scratch: 2 the blocks' arenas, 5 their packed inputs, 3 and 4 a block's gradients below the flatten, 7 the
    // flat layers' activations on N lanes (their features first), 8 their two gradient buffers.
    float* arenas = scratch(thread, 2, fwd.act_floats() * size_t(chunk));
    float* flat_acts = scratch(thread, 7, F * size_t(chunk) * L + fwd.flat_floats(flatten_, chunk * L));
    const size_t flat_grad = flat_width_ * size_t(chunk) * L;  // the widest flat layer, on N lanes
    float* flat_ga = scratch(thread, 8, 2 * flat_grad);
    float* flat_gb = flat_ga + flat_grad;
    const float* in[kMaxChunk][kMaxLayers + 1];  // per block: in[i] the input of layer i
    // ---- each block up to the flatten
    for (int j = 0; j < nb; ++j) {
        const int blk = b0 + j;
        if (x.blocks) {
            in[j][0] = x.blocks + fwd.input_floats() * size_t(blk);
        } else {  // this block's samples, packed here (scratch slot 5: the blocks' inputs until their backward ends)
            const int first = blk * L, count = std::min(L, x.n - first);
            float* packed = scratch(thread, 5, fwd.input_floats() * size_t(chunk)) + fwd.input_floats() * size_t(j);
            const size_t P = fwd.input_floats() / L;
            auto pack_from = [&](const auto* samples) {  // rows index the whole set; without, the block's are next
                if (x.rows) block::pack(k, count, P, L, samples, x.rows + first, packed);
                else block::pack(k, count, P, L, samples + size_t(first) * P, nullptr, packed);
            };
            if (x.pixels) pack_from(x.pixels);
            else pack_from(x.samples);
            in[j][0] = packed;
        }
        fwd.run_layers(k, in[j], arenas + fwd.act_floats() * size_t(j), thread, 0, flatten_);
    }
    // ---- the flat layers on all N lanes: the blocks' features side by side, [F][N]
    const float* fin[kMaxLayers + 1];
    float* features = flat_acts;
    for (int j = 0; nb > 1 && j < nb; ++j) copy_lanes(F, L, in[j][flat], L, features + j * L, N);
    fin[flat] = nb > 1 ? features : in[0][flat];  // one block: already that layout
    fwd.run_flat_layers(k, fin, flat_acts + F * size_t(N), flatten_, size_t(n), N,
                        bf16_view_.empty() ? nullptr : bf16_view_.data(), thread, live_x_[size_t(thread)].data());
    // ---- loss: dlogits into flat_ga
    float loss[kMaxChunk * kLanes];
    k.softmax_xent(fwd.classes(), N, fin[n], label + size_t(b0) * L, scale, loss, flat_ga);
    for (int j = 0; j < nb; ++j) {
        double sum = 0;
        for (int l = 0; l < L; ++l) sum += loss[j * L + l];
        block_loss_[size_t(b0 + j)] = sum;
    }
    // ---- backward: dy in ga, dx into gb, then swap; it stops at the first layer with gradients to compute (below
    // it, frozen layers need no input gradient)
    float *ga = flat_ga, *gb = flat_gb;
    for (int i = n - 1; i >= std::max(first_trainable_, flat); --i) {
        float* dx = backward_layer(i, N, ptrdiff_t(b0) * L, fin, nullptr, nullptr, ga,
                                   i > first_trainable_ ? gb : nullptr, thread);
        if (dx && dx != ga) std::swap(ga, gb);
    }
    flat_done_.fetch_add(nb, std::memory_order_release);  // the dense weight gradients may take these blocks
    if (first_trainable_ >= flat) return;
    // ---- each block below the flatten, from its lanes of the features' gradient
    float* grad_a = scratch(thread, 3, fwd.max_floats());
    float* grad_b = scratch(thread, 4, fwd.max_floats());
    for (int j = 0; j < nb; ++j) {
        float *da = grad_a, *db = grad_b;
        copy_lanes(F, L, ga + j * L, N, da, L);
        float* arena = arenas + fwd.act_floats() * size_t(j);
        float* part = partials_.data() + param_floats_ * size_t(b0 + j);
        for (int i = flat - 1; i >= first_trainable_; --i) {
            float* dx = backward_layer(i, L, 0, in[j], arena, part, da, i > first_trainable_ ? db : nullptr, thread);
            if (dx && dx != da) std::swap(da, db);
        }
    }
}

float* TrainStep::backward_layer(int i, int lanes, ptrdiff_t col0, const float* const* in, float* acts, float* part,
                                 float* dy, float* dx, int thread) {
    const KernelTable& k = kernels();
    const Forward& fwd = *fwd_;
    const LayerSpec& l = fwd.layers()[size_t(i)];
    const float* x_in = in[i];
    const float* y = in[i + 1];
    const ptrdiff_t cnt = ptrdiff_t(fwd.out_floats(size_t(i)) / kLanes * size_t(lanes));
    switch (l.kind) {
        case LayerKind::Conv2d:
        case LayerKind::ConvPool: {
            const ConvGrads g = conv_grads(l, part + param_offset_[size_t(i)]);  // this block's partial
            float* dy_pad = nullptr;
            if (dx && direct_dx(size_t(i))) {
                LineVector<float>& buf = dy_pad_[size_t(i)][size_t(thread)];
                if (buf.empty()) buf.assign(block::padded_dy_floats(l.s), 0.0f);
                dy_pad = buf.data();
            }
            const float* wt = reads_derived(size_t(i)) ? fwd.derived(size_t(i)) : wt_[size_t(i)].data();
            if (l.kind == LayerKind::Conv2d) {
                block::conv_backward(k, l.s, fwd.direct(size_t(i)), x_in, l.w, wt, dy, g.dw, g.db, dx, thread, dy_pad);
                break;
            }
            const block::ConvBf16 bf16{bf16_table_, bf16_dx(size_t(i)) ? wt_bf16_[size_t(i)].data() : nullptr};
            block::conv_pool_backward(k, l.s, x_in, l.w, wt, fwd.argmax(size_t(i), acts), dy, g.dw, g.db, dx, thread,
                                      dy_pad, bf16_conv(size_t(i)) ? &bf16 : nullptr);
            break;
        }
        case LayerKind::MaxPool:
        case LayerKind::AvgPool:
            if (!dx) break;
            if (!pool_windows_tile(&l.s))
                std::memset(dx, 0, block::floats(l.s.ic, l.s.ih, l.s.iw, kLanes) * sizeof(float));
            if (l.kind == LayerKind::MaxPool) k.maxpool_bwd(&l.s, x_in, y, dy, dx, l.relu);
            else k.avgpool_bwd(&l.s, dy, dx);
            break;
        case LayerKind::Relu: if (dx) k.relu_bwd(cnt, y, dy, dx); break;
        case LayerKind::Tanh: if (dx) k.tanh_bwd(cnt, y, dy, dx); break;
        case LayerKind::Flatten: return dy;  // same memory, new shape
        case LayerKind::Linear: {  // gathers x^T and dy for the batch-wide dW (trainable layers)
            const ptrdiff_t B = ptrdiff_t(block_loss_.size()) * kLanes;
            const DenseBatch g = dense_batch(size_t(i), size_t(B));
            if (DenseBf16* d = bf16_form(size_t(i))) {  // dyT in fp32 (for db), x^T in the bf16 form's own pairs
                block::dense_backward(k, lanes, l.s.ic, l.s.oc, col0, B, x_in, l.w, dy, nullptr, nullptr, g.dyT);
                d->backward(lanes, col0, x_in, dy, dx, trainable(l), thread);
                break;
            }
            block::dense_backward(k, lanes, l.s.ic, l.s.oc, col0, B, x_in, l.w, dy, dx, g.xT, g.dyT,
                                  dx_masked(size_t(i)) ? &live_x_[size_t(thread)][size_t(i)] : nullptr);
            break;
        }
    }
    return dx;
}

TrainStep::DenseBatch TrainStep::dense_batch(size_t i, size_t B) {
    const LayerSpec& l = fwd_->layers()[i];
    if (!trainable(l)) return {nullptr, nullptr};
    float* xT = batch_.data() + batch_offset_[i] * B;
    if (bf16_form(i)) return {nullptr, xT};  // no x^T panels in bf16
    return {xT, xT + size_t(block::dense_xT_floats(l.s.ic)) * B};
}

DenseBf16* TrainStep::bf16_form(size_t i) const { return bf16_.empty() ? nullptr : bf16_[i].get(); }

void TrainStep::refresh_bf16(int B) {
    // Each dense layer's W rounded afresh (the last step's update, or the caller, changed it), in tasks of rows.
    const int threads = ThreadPool::instance().threads();
    std::vector<std::pair<size_t, int>>& tasks = refresh_tasks_;  // (layer, first row)
    tasks.clear();
    for (size_t i = 0; i < bf16_.size(); ++i) {
        if (!bf16_[i]) continue;
        bf16_[i]->begin_batch(*bf16_table_, B, threads);
        for (int o = 0; o < fwd_->layers()[i].s.oc; o += DenseBf16::kRefreshRows) tasks.emplace_back(i, o);
    }
    const bool stream = stream_shared_writes();
    ThreadPool::instance().parallel_for(int(tasks.size()), [&](int task, int) {
        const auto [i, o] = tasks[size_t(task)];
        const LayerSpec& l = fwd_->layers()[i];
        bf16_[i]->refresh(l.w, o, std::min(DenseBf16::kRefreshRows, l.s.oc - o), stream);
    });
}

double TrainStep::run_blocks(int nblk, const Input& x, const int32_t* label, float scale, const Update* update) {
    const KernelTable& k = kernels();
    const Forward& fwd = *fwd_;
    const std::vector<LayerSpec>& layers = fwd.layers();
    const int L = kLanes, n = int(layers.size());
    fwd_->refresh_derived_weights();  // the last step's update changed the weights
    if (!bf16_.empty()) bf16_table_ = &bf16_kernels();  // (the instruction set may have changed since the last step)
    for (int i = 1; i < n; ++i) {
        if (!direct_dx(size_t(i))) continue;
        const LayerSpec& l = layers[size_t(i)];
        if (bf16_dx(size_t(i))) {  // the bf16 input gradient's weights
            wt_bf16_[size_t(i)].resize(conv_dx_weights_bf16_count(l.s));
            conv_dx_weights_bf16(*bf16_table_, l.s, l.w, wt_bf16_[size_t(i)].data());
        } else if (!reads_derived(size_t(i))) {  // (sized here: their form depends on the kernels in use)
            wt_[size_t(i)].resize(block::dx_weight_floats(k, l.s));
            block::dx_weights(k, l.s, l.w, wt_[size_t(i)].data());
        }
    }
    partials_.resize(param_floats_ * size_t(nblk));
    const size_t B = size_t(nblk) * L;
    batch_.resize(batch_floats_per_sample_ * B);
    block_loss_.assign(size_t(nblk), 0.0);
    for (int i = first_trainable_ + 1; i < n; ++i)  // the layers whose input gradient is computed
        if (direct_dx(size_t(i))) dy_pad_[size_t(i)].resize(size_t(ThreadPool::instance().threads()));
    live_x_.resize(size_t(ThreadPool::instance().threads()));
    for (auto& per_layer : live_x_) per_layer.resize(size_t(n));
    if (!bf16_.empty()) refresh_bf16(int(B));

    // Phase 0, the blocks, in chunks, one chunk per task: of 1 block where the flat layers' weights stay in L2 beside
    // a block's activations, else of up to kMaxChunk (the MNIST-CoreML-Training graph's batch of 128, 8 blocks: 2
    // chunks of 4 on 1 or 2 threads). Results do not depend on the chunk.
    const int threads = ThreadPool::instance().threads();
    const int chunk = std::min(max_chunk_, (nblk + threads - 1) / threads);
    const int chunks = (nblk + chunk - 1) / chunk;
    const bool warm = max_chunk_ == 1 && threads > 1;
    warmed_.assign(size_t(threads), 0);  // per thread: its first chunk of this step has read the flat weights

    // Phase 1, the weight gradients: each dense layer's dW = dy [out][B] . x^T [B][in] as one GEMM (split by rows),
    // once every block's flat layers are done (the last reads of the dense weights), and the convolution gradients
    // summed over blocks in block order (split into ranges), once every block's backward is done; each range goes
    // through the optimiser update, if any, right where it was computed. A weight gradient whose layer has derived
    // weights stays one task, which derives them after the update: at the next step's start, one thread derived them
    // while the others waited (LeNet-5's second layer's Winograd weights: about 18 us of a 2-thread step).
    // In one job with the blocks: a thread whose blocks are done takes these tasks while the other's are still
    // running, instead of waiting for them at the end of a job of their own. (The blocks' times differ with their
    // data, in the sparse backward and the skipped zero rows: LeNet-5's two pairs of blocks by 16-25 us a step on
    // one thread.)
    std::vector<Task>& tasks = tasks_;
    tasks.clear();
    for (int i = 0; i < n; ++i) {
        const LayerSpec& l = layers[size_t(i)];
        if (l.kind != LayerKind::Linear || !trainable(l)) continue;
        const size_t rows = size_t(block::dense_dw_task_rows(l.s.ic, l.s.oc));
        for (size_t r = 0; r < size_t(l.s.oc); r += rows)
            tasks.push_back({false, i, r, std::min(size_t(l.s.oc), r + rows)});
    }
    constexpr size_t kChunk = 4096;
    for (size_t p = 0; p < conv_parts_.size(); ++p) {
        const size_t floats = conv_parts_[p].floats;
        const size_t step = update && conv_parts_[p].derive_layer >= 0 ? floats : kChunk;
        for (size_t b = 0; b < floats; b += step) tasks.push_back({true, int(p), b, std::min(floats, b + step)});
    }
    flat_done_.store(0, std::memory_order_relaxed);
    blocks_done_.store(0, std::memory_order_relaxed);
    auto task_body = [&](int t, int thread) {
        if (t < chunks) {
            if (warm && !warmed_[size_t(thread)]) warm_flat_weights();  // (a later chunk finds them in this L2)
            warmed_[size_t(thread)] = 1;
            const int nb = std::min(chunk, nblk - t * chunk);
            run_chunk(t * chunk, nb, chunk, x, label, scale, thread);
            blocks_done_.fetch_add(nb, std::memory_order_release);
            return;
        }
        const Task task = tasks[size_t(t - chunks)];
        wait_for(task.conv ? blocks_done_ : flat_done_, nblk);
        const size_t count = task.end - task.begin;
        if (task.conv) {
            const ConvPart& part = conv_parts_[size_t(task.index)];
            float* dst = part.dst + task.begin;
            const float* src = partials_.data() + part.offset + task.begin;
            std::memcpy(dst, src, count * sizeof(float));
            for (int blk = 1; blk < nblk; ++blk) {
                const float* p = src + param_floats_ * size_t(blk);
                for (size_t j = 0; j < count; ++j) dst[j] += p[j];
            }
            if (!update) return;
            update->apply(k, dst, ptrdiff_t(count));
            if (part.derive_layer >= 0) fwd_->derive(size_t(part.derive_layer));
            return;
        }
        const LayerSpec& l = layers[size_t(task.index)];
        const DenseBatch g = dense_batch(size_t(task.index), B);
        if (DenseBf16* d = bf16_form(size_t(task.index))) {  // dW in bf16, db in fp32
            if (l.dw) d->dw_rows(int(task.begin), int(count), g.dyT, l.dw, thread);
            block::dense_dw_rows(k, l.s.ic, ptrdiff_t(B), int(task.begin), int(count), nullptr, g.dyT, nullptr, l.db,
                                 false);
        } else {
            block::dense_dw_rows(k, l.s.ic, ptrdiff_t(B), int(task.begin), int(count), g.xT, g.dyT, l.dw, l.db,
                                 false);
        }
        if (!update) return;
        if (l.dw) update->apply(k, l.dw + task.begin * size_t(l.s.ic), ptrdiff_t(count * size_t(l.s.ic)));
        if (l.db) update->apply(k, l.db + task.begin, ptrdiff_t(count));
    };
    ThreadPool::instance().parallel_phases({chunks, int(tasks.size())}, task_body);
    double total = 0;
    for (double v : block_loss_) total += v;
    return total;
}

}  // namespace lenet::ops
