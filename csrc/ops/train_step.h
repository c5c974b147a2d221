// A captured training step: the layers of a Sequential model, recorded once from Python, run forward, loss and
// backward block by block in one call. Each thread takes a chunk of blocks of 16 samples (gathered from the data set
// by that thread) through every layer and back while their activations stay in its cache: each block alone through
// the layers up to the flatten, the chunk's blocks side by side through the flat layers (linear, ReLU, tanh) and the
// loss, so that a large weight matrix is read once per chunk. Convolution weight gradients are kept per block and
// summed in block order; a dense layer's input and output gradient are gathered for the whole batch and its weight
// gradient is one GEMM over the batch afterwards (results depend neither on the thread count nor on the chunks).
// One pool job per step instead of one per op (in two phases: the blocks, then the weight gradients; run_blocks).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <memory>
#include <vector>

#include "../core/aligned.h"
#include "../kernels/bf16/bf16.h"
#include "../kernels/kernels.h"
#include "ops.h"

namespace lenet::ops {

// ConvPool: a stride-1 conv2d followed by a 2x2 stride-2 max pooling (and a ReLU if relu) as one kernel (s is the
// convolution's shape): one sample at a time in inference, and at 16 lanes in a training step (model::plan decides
// where).
enum class LayerKind { Conv2d, Linear, MaxPool, AvgPool, Relu, Tanh, Flatten, ConvPool };

struct LayerSpec {
    LayerKind kind;
    ConvShape s{};          // conv and pooling: the shape of one block (lanes 16); linear: s.ic = in, s.oc = out
    bool relu = false;      // max pooling (or ConvPool) fused with a ReLU
    const float* w = nullptr;
    const float* b = nullptr;
    float* dw = nullptr;    // gradients, overwritten by run(); null for a frozen parameter (then not computed)
    float* db = nullptr;
};

class Forward;
class DenseBf16;

// The arithmetic of a training step: fp32 throughout, or with operands rounded to bf16 and fp32 sums in the dense
// layers' three products (dense_bf16.h), in the weight gradient of every fused conv-pool layer but a first one, and
// in the input gradient of those bf16_dx picks (conv_bf16.h). Opt-in: results are no longer those of the fp32
// reference.
enum class Precision { Fp32, Bf16 };

class TrainStep {
public:
    static constexpr int kLanes = 16;
    static constexpr int kMaxLayers = 64;
    static constexpr int kMaxChunk = 4;  // blocks per chunk: their flat layers run side by side
    // Chunks of more than one block only where the flat layers' weights exceed this: then each block would stream
    // them from L3, forward and backward (the MNIST-CoreML-Training graph's 2.3 MB; LeNet-5's 235 KB stay in L2,
    // and its blocks measured 3-5% slower in chunks of 2 or 4 than one at a time on the Intel VM).
    static constexpr size_t kChunkWeightBytes = size_t(1) << 20;
    // layers[i] reads the output of layers[i-1] (the first, the input block); the last produces `classes` logits.
    TrainStep(std::vector<LayerSpec> layers, size_t input_floats, int classes, Precision precision = Precision::Fp32);
    ~TrainStep();

    // x [nblk][input][16], label [nblk*16] (-1 marks a padding lane). Overwrites every dw/db with the gradient of
    // scale * (sum of the per-sample losses); returns that sum (not scaled).
    // With an update, each gradient range is also applied to the parameters as soon as it is final (see Update).
    double run(int nblk, const float* x, const int32_t* label, float scale, const Update* update = nullptr);
    // The same on n samples gathered from a data set: x [*][input] (uint8 pixels, scaled by 1/255, or floats),
    // rows [n] which samples (null: the first n), label [ceil(n/16)*16] as above. Each block's thread packs its own
    // 16 samples into the lanes layout, so the gather runs in parallel and its output is still in cache for the
    // first layer.
    double run(int n, const uint8_t* x, const int64_t* rows, const int32_t* label, float scale,
               const Update* update = nullptr);
    double run(int n, const float* x, const int64_t* rows, const int32_t* label, float scale,
               const Update* update = nullptr);
    // Throws std::invalid_argument unless u's buffers hold exactly this step's trainable parameters and gradients
    // (each at the same offset in w and g, covering all n floats).
    void check_update(const Update& u) const;
    // The layers (indices into the plan) whose fused conv-pool backward runs in bf16 with the kernels of the last
    // step: bf16_conv, with an input gradient to compute (without one, conv_pool_backward's weight gradient stays
    // fp32). Empty before the first step and in fp32. For tests and for a user asking what runs where.
    std::vector<int> bf16_conv_layers() const;

private:
    // One block's input: [input][16], either given (x_blocks) or packed from samples into a scratch slot.
    struct Input {
        const float* blocks;    // [nblk][input][16], or samples: uint8 pixels or floats [*][input]
        const uint8_t* pixels;
        const float* samples;
        const int64_t* rows;    // [n] which samples (null: the first n)
        int n;
    };
    double run_blocks(int nblk, const Input& x, const int32_t* label, float scale, const Update* update);
    // Blocks [b0, b0 + nb) on one thread (a chunk of at most `chunk` blocks): each block's layers up to the flatten,
    // then the flat layers, loss and their backward once over all nb*16 lanes (each weight matrix read once per
    // chunk instead of once per block), then each block's backward below the flatten.
    void run_chunk(int b0, int nb, int chunk, const Input& x, const int32_t* label, float scale, int thread);
    void warm_flat_weights() const;
    // Precision::Bf16: the dense layers' bf16 weights from W, and their batch of B samples.
    void refresh_bf16(int B);
    DenseBf16* bf16_form(size_t i) const;  // layer i's bf16 form, or null (fp32, or not a dense layer)
    // Dense layer i's whole-batch gathers in batch_ for B samples: x^T in panels (null in bf16: DenseBf16 keeps its
    // own) and dy [out][B]; both null for a frozen layer.
    struct DenseBatch {
        float* xT;
        float* dyT;
    };
    DenseBatch dense_batch(size_t i, size_t B);
    // Layer i's backward on `lanes` lanes (16: one block, the only case for conv and pooling layers; more: flat
    // layers of a chunk, columns [col0, col0 + lanes) of the batch): dy in dy, dx into dx (null: not needed; a
    // flatten returns dy itself as its dx); in: the activations, acts the block's arena, part the block's partial
    // gradient. Returns where dx is.
    float* backward_layer(int i, int lanes, ptrdiff_t col0, const float* const* in, float* acts, float* part,
                          float* dy, float* dx, int thread);
    // Layer i is a convolution whose input gradient is a direct convolution: a direct one, or a fused conv-pool
    // layer (whose forward is direct; a first layer computes no input gradient) unless its fp32 backward goes through
    // the pooling's sparsity (block::conv_pool_sparse), which needs neither dx weights nor a padded dY.
    bool direct_dx(size_t i) const;
    // Layer i's input is 0 only where the layers below it multiply its gradient by 0: a ReLU's output, a fused
    // layer's with a ReLU, or a max pooling's of those (whose max 0 came from a ReLU's 0). A dense layer's input
    // gradient then skips the rows of x that are all 0 (block::dense_dx, with live_x_).
    bool dx_masked(size_t i) const;
    // Layer i's input gradient reads the forward's derived weights (block::dx_reads_derived), not wt_.
    bool reads_derived(size_t i) const;
    // Precision::Bf16 and layer i a fused conv-pool layer whose backward runs in bf16 (its weight gradient, and its
    // input gradient where bf16_dx): those whose fp32 backward cannot go through the pooling's sparsity
    // (block::conv_pool_sparse), and on a bf16 table that is dense_over_sparse (AMX) those whose input gradient runs
    // in bf16 too. Elsewhere the sparse fp32 backward wins: in dense bf16, LeNet-5's 6 -> 16 5x5 layer's input gradient
    // would go through the dense fp32 path, and its bf16 step on 2 threads of the Intel VM took 496-528 us against
    // 433-479 us through the sparse fp32 backward (alternating processes, 4 each).
    bool bf16_conv(size_t i) const;
    // bf16_conv, and layer i's input gradient runs in bf16 too (conv_bf16.h): one with a full AMX tile of input
    // channels (16) and a kernel of at most 4 taps, whose im2col is at most 4 times its gradient (LeNet-5's 6 -> 16
    // 5x5 layer: 25 times; its bf16 step took 930 us against 525 us with the fp32 input gradient; the
    // MNIST-CoreML-Training graph's 32 -> 32 2x2 layer: 2.54 -> 2.15 ms).
    bool bf16_dx(size_t i) const;

    std::unique_ptr<Forward> fwd_;       // the layers and their forward pass, keeping every activation
    std::vector<size_t> param_offset_;   // per conv layer: where its [dw | db] lives in a block's partial gradient
    // per dense layer: where its x^T in panels (block::dense_xT_floats(in) per sample; none in bf16) and dy [out][B]
    // live (dense_batch)
    std::vector<size_t> batch_offset_;
    std::vector<LineVector<float>> wt_;  // per conv layer: the weights of dX (direct_dx but not reads_derived)
    // per fused conv-pool layer in Precision::Bf16: the bf16 weights of dX instead (conv_bf16.h)
    std::vector<LineVector<uint16_t>> wt_bf16_;
    // per conv layer with a direct input gradient, per thread: its padded dY, zero border written once
    // (block::conv_backward's dy_pad)
    std::vector<std::vector<LineVector<float>>> dy_pad_;
    // per thread, per layer: a dense layer's input rows that are not all 0 in the chunk the thread is on (its
    // forward's, kept for its input gradient: block::dense_dx)
    std::vector<std::vector<std::vector<int>>> live_x_;
    size_t flatten_ = 0;                 // the flatten layer: the flat layers (linear, ReLU, tanh) follow it
    size_t flat_width_ = 0;              // floats per sample of the widest of them (the flatten: the features)
    int max_chunk_ = 1;                  // blocks per chunk at most (kChunkWeightBytes)
    size_t param_floats_ = 0;
    int first_trainable_ = 0;            // the backward pass stops at this layer (nothing below it trains)
    LineVector<float> partials_;         // [nblk][param_floats_]
    LineVector<float> batch_;            // dense layers' whole-batch x^T and dy
    size_t batch_floats_per_sample_ = 0;
    std::vector<double> block_loss_;
    // A conv layer's dw or db: floats [offset, offset + floats) of a block's partial gradient, summed into dst.
    // derive_layer: the layer whose derived weights (Forward::derived) this dw's update changes, else -1.
    struct ConvPart {
        size_t offset, floats;
        float* dst;
        int derive_layer;
    };
    std::vector<ConvPart> conv_parts_;
    // A task of the step's second phase, after the blocks: a range [begin, end) of conv part `index` summed over the
    // blocks, or rows [begin, end) of dense layer `index`'s dW as one GEMM over the batch.
    struct Task {
        bool conv;
        int index;
        size_t begin, end;
    };
    std::vector<Task> tasks_;
    // In a step, how many blocks are through their flat layers' backward, and through their whole backward: the
    // weight gradients' tasks wait for all (run_blocks).
    std::atomic<int> flat_done_{0}, blocks_done_{0};
    std::vector<char> warmed_;  // per thread, in a step: warm_flat_weights done (each entry written by its thread)
    // Precision::Bf16: per layer, a dense layer's bf16 form (null elsewhere), and the same as plain pointers for
    // Forward::run_flat_layers (empty in fp32)
    std::vector<std::unique_ptr<DenseBf16>> bf16_;
    std::vector<const DenseBf16*> bf16_view_;
    const Bf16Table* bf16_table_ = nullptr;               // this step's bf16 kernels (set at its start)
    std::vector<std::pair<size_t, int>> refresh_tasks_;   // refresh_bf16's (layer, first row), kept for its capacity
};

}  // namespace lenet::ops
