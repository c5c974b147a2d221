// int8 inference over a quantized model file (written by lenet/quantize.py): the same graph JSON as an fp32
// file, with int8 weights, int32 biases and the scales, run per sample on uint8 activation codes with the int8
// microkernels (kernels/int8/). Usable from Python (lenet._core.QNetwork) and from the C API alike.
//
// The file, on top of the fp32 layout (model_file.h, graph.h):
//   metadata.quantization = {"scheme": "int8", "input": {"scale": 1/255, "zero_point": 0},
//                            "outputs": [{"scale": s, "zero_point": z}, ...], ...}
//     outputs: one per conv2d / linear layer except the last, in graph order: the code of that layer's output,
//     taken after a ReLU that directly follows it (the ReLU is fused into the requantisation).
//   tensors "param.<i>": weights int8 (same shapes as fp32, values in [-127, 127]), biases int32 at scale
//     s_in * s_w[m]; "param.<i>.scale": float32 [out channels], s_w of weight parameter i (per output channel).
// Layers: conv2d, linear, maxpool, avgpool, relu, tanh, flatten; the last layer (linear) gives float logits. A tanh's
// output has a fixed quantisation, not in the file: scale 1/128, zero point 128 (codes 0..255 for [-1, 127/128]).
//
// One sample's pass: the input pixels are the codes (scale 1/255, zero point 0; float input in [0, 1] is rounded
// to pixels); a convolution regroups its zero-point-padded input into 4-byte groups along the row (QConvArgs) and
// runs the conv kernel vectorised along the output row (no im2col matrix); max pooling and ReLU work on the codes
// (quantisation is monotonic), average pooling takes the mean of the codes (rounded half up), tanh is a table of 256
// output codes; dense layers are one vector-along-outputs kernel call each.
#pragma once
#include <stdint.h>

#include <memory>
#include <string>
#include <vector>

#include "graph.h"
#include "model_file.h"

namespace lenet::model {

class QNetwork {
public:
    // Throws ModelFileError naming what is missing or inconsistent.
    explicit QNetwork(const ModelFile& file);
    ~QNetwork();

    const Graph& graph() const { return graph_; }
    int classes() const { return classes_; }
    size_t sample_size() const { return sample_size_; }  // C*H*W

    // x [n][C*H*W] -> logits [n][classes]: uint8 pixels, or floats in [0, 1] (rounded to the nearest pixel
    // value). Batches run over the thread pool, one sample at a time per thread.
    void predict(int n, const uint8_t* x, float* logits) const;
    void predict(int n, const float* x, float* logits) const;

    struct Stage;

private:
    template <class T>
    void run(int n, const T* x, float* logits) const;
    void run_one(const uint8_t* codes, float* logits, unsigned char* work) const;
    Graph graph_;
    int classes_ = 0;
    size_t sample_size_ = 0;
    std::vector<Stage> stages_;
    size_t act_bytes_ = 0, pad_bytes_ = 0, xq_bytes_ = 0;  // per-sample workspace parts
};

// True when the file's metadata has a "quantization" entry (then make_qnetwork, not an fp32 Network, runs it).
bool is_quantized(const ModelFile& file);
std::unique_ptr<QNetwork> make_qnetwork(const ModelFile& file);

}  // namespace lenet::model
