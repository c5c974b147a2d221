// A model's graph as the user defined it (the layers of a Sequential, un-fused, hyper-parameters only), read from
// and written to JSON, checked by following the shape from the input to the logits, and planned into the engine's
// layer list for a given lane count. This is the one place that turns a graph into kernel calls: the captured
// training step of the Python layer, the inference path and the C API all go through `plan`.
//
// JSON: {"input": [C, H, W], "layers": [
//          {"kind": "conv2d", "in_channels": 1, "out_channels": 6, "kernel": [5, 5], "stride": [1, 1],
//           "padding": [2, 2], "bias": true},
//          {"kind": "relu"}, {"kind": "tanh"}, {"kind": "maxpool" | "avgpool", "kernel": [2, 2], "stride": [2, 2]},
//          {"kind": "flatten"}, {"kind": "linear", "in_features": 400, "out_features": 120, "bias": true}]}
// Parameters, in order: each conv2d / linear layer's weight ([oc][ic][kh][kw] or [out][in]), then its bias.
#pragma once
#include <string>
#include <vector>

#include "../ops/train_step.h"
#include "json.h"

namespace lenet::model {

enum class Kind { Conv2d, Linear, MaxPool, AvgPool, Relu, Tanh, Flatten };

struct Layer {
    Kind kind = Kind::Relu;
    int in = 0, out = 0;               // conv2d: channels; linear: features
    int kh = 0, kw = 0, sh = 1, sw = 1, ph = 0, pw = 0;  // conv2d and pooling
    bool bias = false;
};

struct Graph {
    int c = 0, h = 0, w = 0;           // input shape of one sample
    std::vector<Layer> layers;
};

Graph graph_from_json(const json::Value& v);   // throws std::invalid_argument naming the layer and field
json::Value graph_to_json(const Graph& g);

struct Analysis {
    std::vector<std::vector<int>> param_shapes;  // in parameter order
    std::vector<ConvShape> shapes;               // per layer: conv/pool geometry (lanes 0), linear: ic/oc
    int classes = 0;                             // features of the last layer's output
    size_t input_floats_per_sample = 0;
};
// Follows the shape through the layers; throws std::invalid_argument naming the first layer that does not fit.
Analysis analyse(const Graph& g);

struct Plan {
    std::vector<ops::LayerSpec> layers;  // ReLU next to a max pooling (either order) fused into it
    size_t input_floats = 0;             // one block: C*H*W*lanes
    int classes = 0;
};
// params: one pointer per parameter, in order; grads: the same, or empty for inference.
Plan plan(const Graph& g, int lanes, const std::vector<const float*>& params, const std::vector<float*>& grads);

// A stride-1 convolution followed by a 2x2 stride-2 max pooling becomes one ConvPool layer: at 1 lane every such
// pair; at more, every pair when the active kernels' vectors hold all the lanes, else the first layer when the
// convolution's output is at least this many floats per block.
constexpr size_t kFusedConvPoolMinFloats = size_t(1) << 18;  // 1 MB
bool fuses_every_conv_pool(int lanes);  // the first case at more than 1 lane, under the active kernels

}  // namespace lenet::model
