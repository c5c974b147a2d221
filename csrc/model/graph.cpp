#include "graph.h"

#include <stdexcept>
#include <tuple>

#include "../core/dispatch.h"
#include "../ops/ops.h"

namespace lenet::model {

namespace {

struct KindName {
    Kind kind;
    const char* name;
};
constexpr KindName kKinds[] = {{Kind::Conv2d, "conv2d"}, {Kind::Linear, "linear"}, {Kind::MaxPool, "maxpool"},
                               {Kind::AvgPool, "avgpool"}, {Kind::Relu, "relu"},   {Kind::Tanh, "tanh"},
                               {Kind::Flatten, "flatten"}};

const char* name_of(Kind k) {
    for (const KindName& e : kKinds)
        if (e.kind == k) return e.name;
    return "?";
}

std::pair<int, int> pair_of(const json::Value& layer, const char* key, const std::string& where) {
    const auto& a = layer.at(key, where).as_array(where + " " + key);
    if (a.size() != 2) throw std::invalid_argument(where + " " + key + " must have 2 numbers");
    return {a[0].as_int(where + " " + key), a[1].as_int(where + " " + key)};
}

json::Value pair_json(int a, int b) {
    json::Value v = json::Value::array();
    v.push(json::Value::number(a));
    v.push(json::Value::number(b));
    return v;
}

std::string where_of(size_t i, Kind k) { return "layer " + std::to_string(i) + " (" + name_of(k) + ")"; }

}  // namespace

Graph graph_from_json(const json::Value& v) {
    Graph g;
    const auto& input = v.at("input", "graph").as_array("graph input");
    if (input.size() != 3) throw std::invalid_argument("graph input must be [C, H, W]");
    g.c = input[0].as_int("graph input");
    g.h = input[1].as_int("graph input");
    g.w = input[2].as_int("graph input");
    for (const json::Value& item : v.at("layers", "graph").as_array("graph layers")) {
        const std::string where = "layer " + std::to_string(g.layers.size());
        const std::string& kind = item.at("kind", where).as_string(where + " kind");
        Layer l;
        bool known = false;
        for (const KindName& e : kKinds)
            if (kind == e.name) l.kind = e.kind, known = true;
        if (!known) throw std::invalid_argument(where + ": unknown kind \"" + kind + "\"");
        if (l.kind == Kind::Conv2d) {
            l.in = item.at("in_channels", where).as_int(where + " in_channels");
            l.out = item.at("out_channels", where).as_int(where + " out_channels");
            std::tie(l.ph, l.pw) = pair_of(item, "padding", where);
            l.bias = item.at("bias", where).as_bool(where + " bias");
        } else if (l.kind == Kind::Linear) {
            l.in = item.at("in_features", where).as_int(where + " in_features");
            l.out = item.at("out_features", where).as_int(where + " out_features");
            l.bias = item.at("bias", where).as_bool(where + " bias");
        }
        if (l.kind == Kind::Conv2d || l.kind == Kind::MaxPool || l.kind == Kind::AvgPool) {
            std::tie(l.kh, l.kw) = pair_of(item, "kernel", where);
            std::tie(l.sh, l.sw) = pair_of(item, "stride", where);
        }
        g.layers.push_back(l);
    }
    return g;
}

json::Value graph_to_json(const Graph& g) {
    json::Value v = json::Value::object(), input = json::Value::array(), layers = json::Value::array();
    for (int d : {g.c, g.h, g.w}) input.push(json::Value::number(d));
    for (const Layer& l : g.layers) {
        json::Value o = json::Value::object();
        o.set("kind", json::Value::string(name_of(l.kind)));
        if (l.kind == Kind::Conv2d) {
            o.set("in_channels", json::Value::number(l.in));
            o.set("out_channels", json::Value::number(l.out));
        }
        if (l.kind == Kind::Linear) {
            o.set("in_features", json::Value::number(l.in));
            o.set("out_features", json::Value::number(l.out));
        }
        if (l.kind == Kind::Conv2d || l.kind == Kind::MaxPool || l.kind == Kind::AvgPool) {
            o.set("kernel", pair_json(l.kh, l.kw));
            o.set("stride", pair_json(l.sh, l.sw));
        }
        if (l.kind == Kind::Conv2d) o.set("padding", pair_json(l.ph, l.pw));
        if (l.kind == Kind::Conv2d || l.kind == Kind::Linear) o.set("bias", json::Value::boolean(l.bias));
        layers.push(std::move(o));
    }
    v.set("input", std::move(input));
    v.set("layers", std::move(layers));
    return v;
}

Analysis analyse(const Graph& g) {
    constexpr int kMaxDim = 1 << 16;
    auto check = [](bool ok, const std::string& where, const std::string& why) {
        if (!ok) throw std::invalid_argument(where + ": " + why);
    };
    check(g.c > 0 && g.h > 0 && g.w > 0 && g.c < kMaxDim && g.h < kMaxDim && g.w < kMaxDim, "graph input",
          "C, H and W must be in [1, 65535]");
    check(!g.layers.empty() && g.layers.size() <= size_t(ops::TrainStep::kMaxLayers), "graph",
          "must have 1 to 64 layers");
    Analysis a;
    a.input_floats_per_sample = size_t(g.c) * g.h * g.w;
    int c = g.c, h = g.h, w = g.w, features = 0;
    bool flat = false;
    for (size_t i = 0; i < g.layers.size(); ++i) {
        const Layer& l = g.layers[i];
        const std::string where = where_of(i, l.kind);
        ConvShape s{};
        if (l.kind == Kind::Conv2d || l.kind == Kind::MaxPool || l.kind == Kind::AvgPool) {
            check(!flat, where, "needs a (C, H, W) input, got flat features");
            check(l.kh > 0 && l.kw > 0 && l.kh < kMaxDim && l.kw < kMaxDim, where, "kernel must be positive");
            check(l.sh > 0 && l.sw > 0 && l.sh < kMaxDim && l.sw < kMaxDim, where, "stride must be positive");
            check(l.ph >= 0 && l.pw >= 0 && l.ph < kMaxDim && l.pw < kMaxDim, where, "padding must be >= 0");
            const int oc = l.kind == Kind::Conv2d ? l.out : c;
            if (l.kind == Kind::Conv2d) {
                check(l.in == c, where, "in_channels is " + std::to_string(l.in) + " but its input has " +
                                            std::to_string(c) + " channels");
                check(l.out > 0 && l.out < kMaxDim, where, "out_channels must be positive");
            }
            s = ConvShape{c, h, w, oc, 0, 0, l.kh, l.kw, l.sh, l.sw, l.ph, l.pw, 0};
            check(h + 2 * l.ph >= l.kh && w + 2 * l.pw >= l.kw, where,
                  "the window (" + std::to_string(l.kh) + "x" + std::to_string(l.kw) + ") is larger than its input (" +
                      std::to_string(h) + "x" + std::to_string(w) + (l.ph || l.pw ? " padded" : "") + ")");
            ops::conv_output_size(s);
            if (l.kind == Kind::Conv2d) {
                a.param_shapes.push_back({l.out, l.in, l.kh, l.kw});
                if (l.bias) a.param_shapes.push_back({l.out});
            }
            c = oc, h = s.oh, w = s.ow;
        } else if (l.kind == Kind::Flatten) {
            if (!flat) features = c * h * w;
            flat = true;
        } else if (l.kind == Kind::Linear) {
            check(flat, where, "needs flat features: add a flatten before it");
            check(l.in == features, where, "in_features is " + std::to_string(l.in) + " but its input has " +
                                               std::to_string(features) + " features");
            check(l.out > 0 && l.out < (1 << 24), where, "out_features must be positive");
            s.ic = l.in;
            s.oc = l.out;
            a.param_shapes.push_back({l.out, l.in});
            if (l.bias) a.param_shapes.push_back({l.out});
            features = l.out;
        }
        a.shapes.push_back(s);
    }
    check(flat && g.layers.back().kind == Kind::Linear, "graph", "must end in a linear layer (the class logits)");
    a.classes = features;
    return a;
}

namespace {
// A stride-1 convolution followed by a 2x2 stride-2 max pooling (with or without its fused ReLU) becomes one ConvPool
// layer, whose kernel never writes the convolution's output: one sample at a time (inference), every such pair. At
// 16 lanes:
// - when the active kernels hold the 16 lanes in one vector (AVX-512), every pair. A first layer's backward routes
//   each pooled gradient once per weight-gradient tile (LeNet-5's step measured 4-8% faster); a later layer's
//   routes it into the convolution's full-size gradient (conv_pool_route) for its weight and input gradients,
//   instead of a separate pooling forward and backward and the convolution's output in memory (the
//   MNIST-CoreML-Training graph's step 4% faster on the Intel VM, LeNet-5's unchanged);
// - otherwise the first layer, when its output would not fit in L2 (the MNIST-CoreML-Training graph's first
//   convolution: 1.4 MB per block), where the saved traffic pays for the routing (elsewhere the separate kernels
//   are faster: LeNet-5's step on AVX2 measured 8% slower with its first layer fused); and a later layer whose
//   backward the kernels take through the pooling's sparsity (kernels.h: conv_pool_bwd_sparse), which leaves out
//   most of its weight and input gradients' products (AVX2: LeNet-5's second layer).
void fuse_conv_pool(std::vector<ops::LayerSpec>& layers, int lanes) {
    const bool wide = fuses_every_conv_pool(lanes);
    std::vector<ops::LayerSpec> out;
    for (const ops::LayerSpec& l : layers) {
        ops::LayerSpec* prev = out.empty() ? nullptr : &out.back();
        const bool big =
            prev && size_t(prev->s.oc) * prev->s.oh * prev->s.ow * size_t(lanes) >= kFusedConvPoolMinFloats;
        const bool sparse = prev && out.size() > 1 && kernels().conv_pool_bwd_sparse &&
                            conv_pool_sparse_shape(&prev->s, /*with_dx=*/true);
        const bool wanted = prev && (lanes == 1 || wide || (out.size() == 1 && big) || sparse);
        if (wanted && prev->kind == ops::LayerKind::Conv2d && prev->s.sh == 1 && prev->s.sw == 1 &&
            l.kind == ops::LayerKind::MaxPool && l.s.kh == 2 && l.s.kw == 2 && l.s.sh == 2 && l.s.sw == 2 &&
            l.s.ph == 0 && l.s.pw == 0) {
            prev->kind = ops::LayerKind::ConvPool;
            prev->relu = l.relu;
            continue;
        }
        out.push_back(l);
    }
    layers = std::move(out);
}
}  // namespace

bool fuses_every_conv_pool(int lanes) { return kernels().vector_floats >= lanes; }

Plan plan(const Graph& g, int lanes, const std::vector<const float*>& params, const std::vector<float*>& grads) {
    const Analysis a = analyse(g);
    if (params.size() != a.param_shapes.size() || (!grads.empty() && grads.size() != params.size()))
        throw std::invalid_argument("the graph has " + std::to_string(a.param_shapes.size()) + " parameters, got " +
                                    std::to_string(params.size()));
    Plan p;
    p.input_floats = a.input_floats_per_sample * size_t(lanes);
    p.classes = a.classes;
    size_t next = 0;
    auto take = [&](ops::LayerSpec& spec, bool bias) {
        spec.w = params[next];
        spec.dw = grads.empty() ? nullptr : grads[next];
        ++next;
        if (bias) {
            spec.b = params[next];
            spec.db = grads.empty() ? nullptr : grads[next];
            ++next;
        }
    };
    for (size_t i = 0; i < g.layers.size(); ++i) {
        const Layer& l = g.layers[i];
        ops::LayerSpec spec;
        spec.s = a.shapes[i];
        spec.s.lanes = lanes;
        switch (l.kind) {
            case Kind::Conv2d: spec.kind = ops::LayerKind::Conv2d; take(spec, l.bias); break;
            case Kind::Linear: spec.kind = ops::LayerKind::Linear; take(spec, l.bias); break;
            case Kind::MaxPool: spec.kind = ops::LayerKind::MaxPool; break;
            case Kind::AvgPool: spec.kind = ops::LayerKind::AvgPool; break;
            case Kind::Relu: spec.kind = ops::LayerKind::Relu; break;
            case Kind::Tanh: spec.kind = ops::LayerKind::Tanh; break;
            case Kind::Flatten: spec.kind = ops::LayerKind::Flatten; break;
        }
        // A ReLU next to a max pooling, either order, runs as one fused max-pool-ReLU (they commute).
        ops::LayerSpec* prev = p.layers.empty() ? nullptr : &p.layers.back();
        const bool pool_then_relu = prev && prev->kind == ops::LayerKind::MaxPool && !prev->relu &&
                                    spec.kind == ops::LayerKind::Relu;
        const bool relu_then_pool = prev && prev->kind == ops::LayerKind::Relu &&
                                    spec.kind == ops::LayerKind::MaxPool;
        if (pool_then_relu) {
            prev->relu = true;
            continue;
        }
        if (relu_then_pool) {
            spec.relu = true;
            p.layers.back() = spec;
            continue;
        }
        p.layers.push_back(spec);
    }
    if (lanes == 1 || lanes == ops::TrainStep::kLanes) fuse_conv_pool(p.layers, lanes);
    return p;
}

}  // namespace lenet::model
