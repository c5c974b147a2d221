// Inference over a graph whose parameters the caller owns (the Python model's arrays, or the C API's buffer):
// images in, logits out, in one call. One sample at a time runs at lanes 1 on the calling thread (no thread-pool
// wake-up: batch-1 latency), each convolution followed by a 2x2 max pooling as one fused kernel (plan's ConvPool);
// from 8 samples on, blocks of 16 run over the pool at lanes 16 with the shape-specialised kernels.
#pragma once
#include <stdint.h>

#include <memory>
#include <vector>

#include "../ops/forward.h"
#include "graph.h"

namespace lenet::model {

class Network {
public:
    static constexpr int kMinBlockBatch = 8;  // from this batch size on, blocks of 16 lanes
    Network(const Graph& g, const std::vector<const float*>& params);

    const Graph& graph() const { return graph_; }
    const Analysis& analysis() const { return analysis_; }
    int classes() const { return analysis_.classes; }
    size_t sample_floats() const { return analysis_.input_floats_per_sample; }

    // x [n][C*H*W] -> logits [n][classes]. uint8 pixels are scaled by 1/255 on the way in.
    void predict(int n, const float* x, float* logits) const;
    void predict(int n, const uint8_t* x, float* logits) const;

private:
    template <class T>
    void run(int n, const T* x, float* logits) const;
    Graph graph_;
    Analysis analysis_;
    std::unique_ptr<ops::Forward> one_, block_;  // lanes 1 and lanes 16
};

}  // namespace lenet::model
