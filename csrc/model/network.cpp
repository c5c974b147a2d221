#include "network.h"

#include <algorithm>
#include <type_traits>

#include "../core/dispatch.h"
#include "../core/threadpool.h"
#include "../ops/block.h"

namespace lenet::model {

Network::Network(const Graph& g, const std::vector<const float*>& params) : graph_(g), analysis_(analyse(g)) {
    for (int lanes : {1, ops::TrainStep::kLanes}) {
        Plan p = plan(g, lanes, params, {});
        (lanes == 1 ? one_ : block_) = std::make_unique<ops::Forward>(std::move(p.layers), p.input_floats, p.classes);
    }
}

template <class T>
void Network::run(int n, const T* x, float* logits) const {
    const KernelTable& k = kernels();
    const size_t F = sample_floats();
    const int K = classes();
    const bool blocks = n >= kMinBlockBatch;
    ops::Forward& fwd = blocks ? *block_ : *one_;
    fwd.refresh_derived_weights();  // the parameters are read live: they may have changed in place
    const int L = fwd.lanes();
    const int ntasks = blocks ? (n + L - 1) / L : n;
    auto task = [&](int t, int thread) {
        const int first = t * L, count = std::min(L, n - first);
        const float* in[ops::TrainStep::kMaxLayers + 1];
        float* input = nullptr;
        if (L == 1 && std::is_same<T, float>::value) {
            in[0] = reinterpret_cast<const float*>(x) + size_t(first) * F;
        } else {
            input = scratch(thread, 5, fwd.input_floats());
            ops::block::pack(k, count, F, L, x + size_t(first) * F, nullptr, input);
            in[0] = input;
        }
        fwd.run_block(k, in, scratch(thread, 2, fwd.act_floats()), thread);
        const float* out = in[fwd.layers().size()];  // [K][L]
        for (int l = 0; l < count; ++l)
            for (int c = 0; c < K; ++c) logits[size_t(first + l) * K + c] = out[size_t(c) * L + l];
    };
    ThreadPool::instance().parallel_for(ntasks, std::move(task));  // one task runs on the calling thread: no wake-up
}

void Network::predict(int n, const float* x, float* logits) const { run(n, x, logits); }
void Network::predict(int n, const uint8_t* x, float* logits) const { run(n, x, logits); }

}  // namespace lenet::model
