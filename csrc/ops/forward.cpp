#include "forward.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "../core/aligned.h"
#include "block.h"
#include "dense_bf16.h"
#include "ops.h"

namespace lenet::ops {

Forward::Forward(std::vector<LayerSpec> layers, size_t input_floats, int classes)
    : layers_(std::move(layers)), input_floats_(input_floats), classes_(classes) {
    if (layers_.empty() || layers_.size() > size_t(TrainStep::kMaxLayers)) throw std::invalid_argument("1 to 64 layers");
    lanes_ = layers_.front().s.lanes;
    const int L = lanes_;
    size_t in = input_floats;
    max_floats_ = in;
    for (const LayerSpec& l : layers_) {
        if (l.s.lanes != L) throw std::invalid_argument("every layer must have the same lane count");
        size_t out = 0;
        switch (l.kind) {
            case LayerKind::Conv2d: out = block::floats(l.s.oc, l.s.oh, l.s.ow, L); break;
            case LayerKind::ConvPool:
                if ((L != 1 && L != TrainStep::kLanes) || l.s.sh != 1 || l.s.sw != 1)
                    throw std::invalid_argument("a fused conv-pool layer runs at stride 1, on 1 or 16 lanes");
                out = block::floats(l.s.oc, l.s.oh / 2, l.s.ow / 2, L);
                break;
            case LayerKind::MaxPool:
            case LayerKind::AvgPool: out = block::floats(l.s.ic, l.s.oh, l.s.ow, L); break;
            case LayerKind::Linear: out = size_t(l.s.oc) * L; break;
            case LayerKind::Relu:
            case LayerKind::Tanh:
            case LayerKind::Flatten: out = in; break;
        }
        out_floats_.push_back(out);
        act_offset_.push_back(act_floats_);
        // Flatten aliases its input; every other output starts on a line (at lanes 1 a layer's floats need not fill
        // whole lines, and the dense layers' vector loads of their input would straddle two)
        act_floats_ += l.kind == LayerKind::Flatten ? 0 : to_line(out);
        if (l.kind == LayerKind::ConvPool && L > 1) act_floats_ += out;  // its argmax, after its output
        max_floats_ = std::max(max_floats_, out);
        // (At 16 lanes the forward and backward choices agree; the training step's backward reads direct().)
        direct_.push_back(l.kind == LayerKind::Conv2d && conv_uses_direct(l.s, ConvAlgo::Auto, /*backward=*/false));
        const size_t df = block::derived_weight_floats(l.s, l.kind == LayerKind::ConvPool, direct_.back());
        weights_seen_.emplace_back(df ? size_t(l.s.oc) * l.s.ic * l.s.kh * l.s.kw : 0);
        derived_.emplace_back(df);
        if (df) derive(weights_seen_.size() - 1);  // this layer's
        in = out;
    }
    if (in != size_t(classes) * L) throw std::invalid_argument("the last layer must produce the class logits");
}

void Forward::derive(size_t i) {
    std::memcpy(weights_seen_[i].data(), layers_[i].w, weights_seen_[i].size() * sizeof(float));
    block::derive_weights(layers_[i].s, layers_[i].w, derived_[i].data());
}

void Forward::refresh_derived_weights() {
    for (size_t i = 0; i < layers_.size(); ++i) {
        const std::vector<float>& seen = weights_seen_[i];
        if (!seen.empty() && std::memcmp(seen.data(), layers_[i].w, seen.size() * sizeof(float)) != 0) derive(i);
    }
}

namespace {
// A flat layer (flatten, linear, ReLU, tanh) on `lanes` lanes: x [in][lanes] -> out [out][lanes] (`floats` of them);
// returns where its output is (a flatten's is x itself).
const float* flat_layer(const KernelTable& k, const LayerSpec& l, int lanes, ptrdiff_t floats, const float* x,
                        float* out, const DenseBf16* bf16 = nullptr, int thread = 0,
                        std::vector<int>* live_x = nullptr) {
    switch (l.kind) {
        case LayerKind::Relu: k.relu_fwd(floats, x, out); break;
        case LayerKind::Tanh: k.tanh_fwd(floats, x, out); break;
        case LayerKind::Flatten: return x;
        case LayerKind::Linear:
            if (bf16) {
                bf16->forward(k, lanes, x, l.b, out, thread);
                break;
            }
            block::dense_forward(k, lanes, l.s.ic, l.s.oc, x, l.w, l.b, out, live_x);
            break;
        default: throw std::logic_error("not a flat layer");
    }
    return out;
}
}  // namespace

void Forward::run_layers(const KernelTable& k, const float** in, float* acts, int thread, size_t begin,
                         size_t end) const {
    const int L = lanes_;
    for (size_t i = begin; i < end; ++i) {
        const LayerSpec& l = layers_[i];
        float* out = acts + act_offset_[i];
        const float* derived = derived_[i].empty() ? nullptr : derived_[i].data();
        switch (l.kind) {
            case LayerKind::Conv2d:
                block::conv_forward(k, l.s, direct_[i], in[i], l.w, derived, l.b, out, thread);
                break;
            case LayerKind::ConvPool:
                block::conv_pool_forward(k, l.s, in[i], l.w, derived, l.b, l.relu, out,
                                         L > 1 ? argmax(i, acts) : nullptr, thread);
                break;
            case LayerKind::MaxPool: k.maxpool_fwd(&l.s, in[i], out, l.relu); break;
            case LayerKind::AvgPool: k.avgpool_fwd(&l.s, in[i], out); break;
            default: in[i + 1] = flat_layer(k, l, L, ptrdiff_t(out_floats_[i]), in[i], out); continue;
        }
        in[i + 1] = out;
    }
}

size_t Forward::widened(size_t floats, int lanes) const { return floats / size_t(lanes_) * size_t(lanes); }

size_t Forward::flat_floats(size_t begin, int lanes) const { return widened(act_floats_ - act_offset_[begin], lanes); }

void Forward::run_flat_layers(const KernelTable& k, const float** in, float* acts, size_t begin, size_t end,
                              int lanes, const DenseBf16* const* bf16, int thread, std::vector<int>* live_x) const {
    const auto widen = [&](size_t floats) { return widened(floats, lanes); };
    for (size_t i = begin; i < end; ++i)
        in[i + 1] = flat_layer(k, layers_[i], lanes, ptrdiff_t(widen(out_floats_[i])), in[i],
                               acts + widen(act_offset_[i] - act_offset_[begin]), bf16 ? bf16[i] : nullptr, thread,
                               live_x ? &live_x[i] : nullptr);
}

}  // namespace lenet::ops
