// The forward pass of a planned layer list (model::plan) over blocks of `lanes` samples, shared by the captured
// training step (lanes 16, keeping every activation for the backward pass) and inference (lanes 16 for batches,
// lanes 1 for one sample at a time). Activations of one block live in one arena per thread; flatten aliases its
// input, so a block's logits end at in[n].
#pragma once
#include <stddef.h>

#include <vector>

#include "train_step.h"

namespace lenet::ops {

class DenseBf16;

class Forward {
public:
    // layers[i] reads the output of layers[i-1] (the first, a block of input_floats); every s.lanes is the same;
    // the last produces `classes` logits per sample.
    Forward(std::vector<LayerSpec> layers, size_t input_floats, int classes);

    const std::vector<LayerSpec>& layers() const { return layers_; }
    int lanes() const { return lanes_; }
    int classes() const { return classes_; }
    size_t input_floats() const { return input_floats_; }
    size_t act_floats() const { return act_floats_; }   // one block's activations (a thread's arena)
    size_t max_floats() const { return max_floats_; }   // the largest single activation of a block, input included
    size_t out_floats(size_t i) const { return out_floats_[i]; }
    bool direct(size_t i) const { return direct_[i]; }  // conv layer i runs the shape-specialised kernels
    // A fused conv-pool layer at 16 lanes: where its argmax lives in the arena (after its output).
    float* argmax(size_t i, float* acts) const { return acts + act_offset_[i] + out_floats_[i]; }

    // in[0]: the block's input [input][lanes]; fills in[1..n] (in[n]: logits [classes][lanes]) inside `acts`.
    void run_block(const KernelTable& k, const float** in, float* acts, int thread) const {
        run_layers(k, in, acts, thread, 0, layers_.size());
    }
    // Layers [begin, end) only: in[begin] given, fills in[begin+1..end].
    void run_layers(const KernelTable& k, const float** in, float* acts, int thread, size_t begin, size_t end) const;
    // Flat layers [begin, end) (flatten, linear, ReLU, tanh) on `lanes` lanes, a multiple of lanes(): several
    // blocks' features side by side, [features][lanes], so that each weight matrix is read once for all of them.
    // in[begin] given; the outputs go to `acts` (flat_floats(begin, lanes) floats), laid out as in a block's arena
    // from layer begin on, widened to the lanes.
    // bf16 (may be null): per layer, a dense layer's bf16 form (dense_bf16.h), which then runs in its place, on
    // `thread`'s scratch. live_x (may be null): per layer, where a dense fp32 layer keeps the rows of its input that
    // are not all 0 (block::dense_forward), for its backward.
    void run_flat_layers(const KernelTable& k, const float** in, float* acts, size_t begin, size_t end,
                         int lanes, const DenseBf16* const* bf16 = nullptr, int thread = 0,
                         std::vector<int>* live_x = nullptr) const;
    size_t flat_floats(size_t begin, int lanes) const;

    // Brings the weights each convolution's kernels read besides w (block::derived_weight_floats: channels-last at
    // lanes 1, Winograd's at 16 lanes) up to date with w, deriving again only those whose w changed since the last
    // call: the parameters are read live, so they may have been trained in place. Call before run_block, from one
    // thread. (The check is a comparison with a copy: 10 KB for LeNet-5, where regrouping every call cost 0.8 us of
    // a 7 us forward pass.)
    void refresh_derived_weights();
    // Layer i's derived weights (null where it has none), as of the last refresh.
    const float* derived(size_t i) const { return derived_[i].empty() ? nullptr : derived_[i].data(); }
    // Derives layer i's weights now (it has some: derived(i) is not null), for a caller that has just changed w: the
    // next refresh then finds them up to date. Layers may be derived on different threads at once.
    void derive(size_t i);

private:
    // A per-block count of floats (lanes() lanes) on `lanes` lanes.
    size_t widened(size_t floats, int lanes) const;

    std::vector<LayerSpec> layers_;
    std::vector<size_t> out_floats_;  // per layer: floats of one block's output
    std::vector<size_t> act_offset_;  // per layer: where its output lives in the arena
    std::vector<bool> direct_;
    std::vector<std::vector<float>> weights_seen_;  // per layer: w when last derived
    std::vector<LineVector<float>> derived_;        // per layer: what was derived from it
    size_t input_floats_, act_floats_ = 0, max_floats_ = 0;
    int classes_, lanes_;
};

}  // namespace lenet::ops
