// The C API (lenet.h) over the core: model files (model/model_file.h), graphs (model/graph.h), inference
// (model/network.h) and the captured training step (ops/train_step.h), with exceptions turned into error codes.
#include "lenet.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "../core/dispatch.h"
#include "../core/threadpool.h"
#include "../model/graph.h"
#include "../model/model_file.h"
#include "../model/network.h"
#include "../model/qnetwork.h"
#include "../ops/ops.h"
#include "../ops/train_step.h"

using namespace lenet;

struct lenet_model {
    model::Graph graph;
    model::Analysis analysis;
    json::Value metadata = json::Value::object();
    std::vector<std::string> class_names;
    LineVector<float> params;                  // every parameter, in graph order, each from the start of a line
    std::vector<size_t> offsets;               // where each parameter starts in params
    std::unique_ptr<model::Network> net;
    std::unique_ptr<model::QNetwork> qnet;     // an int8 file (lenet.quantize): inference only
    // Training state, made on the first training step.
    LineVector<float> grads, velocity;
    std::vector<int32_t> labels;
    std::unique_ptr<ops::TrainStep> step;
};

namespace {

thread_local std::string g_error;
std::mutex g_engine;  // the thread pool and its scratch serve one call at a time

template <class F>
auto guarded(F&& f, decltype(f()) failed) -> decltype(f()) {
    try {
        g_error.clear();
        return f();
    } catch (const std::exception& e) {
        g_error = e.what();
    } catch (...) {
        g_error = "unknown error";
    }
    return failed;
}

void require(bool ok, const std::string& why) {
    if (!ok) throw std::invalid_argument(why);
}

std::vector<const float*> param_pointers(const lenet_model& m) {
    std::vector<const float*> out;
    for (size_t off : m.offsets) out.push_back(m.params.data() + off);
    return out;
}

// The graph's shapes, and class names "0".."K-1" unless the file named them.
void analyse(lenet_model& m) {
    m.analysis = model::analyse(m.graph);
    if (m.class_names.size() != size_t(m.analysis.classes)) {
        m.class_names.clear();
        for (int i = 0; i < m.analysis.classes; ++i) m.class_names.push_back(std::to_string(i));
    }
}

// Floats of parameter i, from its shape in the graph.
size_t param_floats(const lenet_model& m, size_t i) {
    size_t n = 1;
    for (int d : m.analysis.param_shapes[i]) n *= size_t(d);
    return n;
}

// Fills the parameter layout from the graph, and (re)builds the inference network over it.
void finish(lenet_model& m) {
    analyse(m);
    size_t total = 0;
    m.offsets.clear();
    for (size_t i = 0; i < m.analysis.param_shapes.size(); ++i) {
        m.offsets.push_back(total);
        total = to_line(total + param_floats(m, i));  // the kernels load whole lines (core/aligned.h)
    }
    m.params.assign(total, 0.0f);  // zero padding: the update leaves it zero
    m.net = std::make_unique<model::Network>(m.graph, param_pointers(m));
}

template <class T>
int predict(lenet_model* m, const T* images, int n, float* logits) {
    require(m && images && logits, "null argument");
    require(n > 0, "n must be positive");
    std::lock_guard<std::mutex> lock(g_engine);
    if (m->qnet) m->qnet->predict(n, images, logits);
    else m->net->predict(n, images, logits);
    return 0;
}

template <class T>
int train_step(lenet_model* m, const T* images, const int32_t* labels, int n, float lr, float momentum, float* loss) {
    require(m && images && labels, "null argument");
    require(!m->qnet, "an int8 model is for inference: train the fp32 model, then quantize it");
    require(n > 0, "n must be positive");
    require(lr > 0 && std::isfinite(lr), "lr must be positive");
    require(momentum >= 0 && momentum < 1, "momentum must be in [0, 1)");
    for (int i = 0; i < n; ++i)
        require(labels[i] >= 0 && labels[i] < m->analysis.classes,
                "labels[" + std::to_string(i) + "] = " + std::to_string(labels[i]) + " is outside [0, " +
                    std::to_string(m->analysis.classes) + ")");
    std::lock_guard<std::mutex> lock(g_engine);
    constexpr int L = ops::TrainStep::kLanes;
    if (!m->step) {
        m->grads.assign(m->params.size(), 0.0f);
        m->velocity.assign(m->params.size(), 0.0f);
        std::vector<float*> grads;
        for (size_t off : m->offsets) grads.push_back(m->grads.data() + off);
        model::Plan p = model::plan(m->graph, L, param_pointers(*m), grads);
        m->step = std::make_unique<ops::TrainStep>(std::move(p.layers), p.input_floats, p.classes);
    }
    const int nblk = (n + L - 1) / L;
    m->labels.assign(size_t(nblk) * L, -1);  // -1: a padding lane
    std::copy(labels, labels + n, m->labels.begin());
    ops::Update sgd;  // applied by the step to each gradient range as soon as it is final
    sgd.kind = ops::Update::Kind::Sgd;
    sgd.lr = lr;
    sgd.momentum = momentum;
    sgd.w = m->params.data();
    sgd.g = m->grads.data();
    sgd.s1 = m->velocity.data();
    sgd.n = ptrdiff_t(m->params.size());
    m->step->check_update(sgd);  // every parameter trains: the flat buffers are exactly the step's
    const double total = m->step->run(n, images, nullptr, m->labels.data(), 1.0f / float(n), &sgd);
    if (loss) *loss = float(total / n);
    return 0;
}

}  // namespace

extern "C" {

const char* lenet_last_error(void) { return g_error.c_str(); }
const char* lenet_version(void) { return LENET_VERSION_STRING; }
const char* lenet_isa(void) { return kernels().isa; }

int lenet_set_num_threads(int n) {
    return guarded([&] {
        require(n > 0, "n must be positive");
        std::lock_guard<std::mutex> lock(g_engine);
        ThreadPool::instance().set_threads(n);
        return ThreadPool::instance().threads();
    }, -1);
}

lenet_model* lenet_load(const char* path) {
    return guarded([&]() -> lenet_model* {
        require(path, "null path");
        const model::ModelFile f = model::read_model_file(path);
        auto m = std::make_unique<lenet_model>();
        try {
            m->graph = model::graph_from_json(f.header.at("graph", "header"));
            if (const json::Value* meta = f.header.find("metadata"); meta && meta->is(json::Value::Type::Object))
                m->metadata = *meta;
            if (const json::Value* names = m->metadata.find("classes"))
                for (const json::Value& c : names->as_array("metadata classes"))
                    m->class_names.push_back(c.as_string("a class name"));
            if (model::is_quantized(f)) {
                m->qnet = model::make_qnetwork(f);
                analyse(*m);
                return m.release();
            }
            finish(*m);
            for (size_t i = 0; i < m->offsets.size(); ++i) {
                const std::string name = "param." + std::to_string(i);
                const model::Tensor* t = nullptr;
                for (const model::Tensor& x : f.tensors)
                    if (x.name == name) t = &x;
                require(t && t->dtype == "float32" && t->elements() == param_floats(*m, i),
                        "parameter " + std::to_string(i) + " is missing or does not match the graph");
                std::memcpy(m->params.data() + m->offsets[i], t->data.data(), t->data.size());
            }
        } catch (const std::invalid_argument& e) {
            throw model::ModelFileError(std::string(path) + ": " + e.what());
        }
        return m.release();
    }, nullptr);
}

lenet_model* lenet_create(const char* graph_json, uint64_t seed) {
    return guarded([&]() -> lenet_model* {
        require(graph_json, "null graph");
        auto m = std::make_unique<lenet_model>();
        m->graph = model::graph_from_json(json::parse(graph_json));
        finish(*m);
        // PyTorch's default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in * kh * kw.
        std::mt19937_64 rng(seed);
        size_t i = 0;
        for (const model::Layer& l : m->graph.layers) {
            if (l.kind != model::Kind::Conv2d && l.kind != model::Kind::Linear) continue;
            const float bound = 1.0f / std::sqrt(float(l.kind == model::Kind::Conv2d ? l.in * l.kh * l.kw : l.in));
            std::uniform_real_distribution<float> u(-bound, bound);
            for (int part = 0; part < (l.bias ? 2 : 1); ++part, ++i) {
                float* p = m->params.data() + m->offsets[i];
                for (size_t k = 0, n = param_floats(*m, i); k < n; ++k) p[k] = u(rng);
            }
        }
        return m.release();
    }, nullptr);
}

int lenet_save(const lenet_model* m, const char* path) {
    return guarded([&] {
        require(m && path, "null argument");
        require(!m->qnet, "int8 model files are written by lenet.quantize (Python); save the fp32 model here");
        model::ModelFile f;
        json::Value meta = m->metadata;
        json::Value shape = json::Value::array(), names = json::Value::array();
        for (int d : {m->graph.c, m->graph.h, m->graph.w}) shape.push(json::Value::number(d));
        for (const std::string& c : m->class_names) names.push(json::Value::string(c));
        meta.set("format_version", json::Value::number(model::kModelFormatVersion));
        meta.set("input_shape", std::move(shape));
        meta.set("classes", std::move(names));
        f.header = json::Value::object();
        f.header.set("graph", model::graph_to_json(m->graph));
        f.header.set("metadata", std::move(meta));
        for (size_t i = 0; i < m->offsets.size(); ++i) {
            model::Tensor t;
            t.name = "param." + std::to_string(i);
            t.dtype = "float32";
            for (int d : m->analysis.param_shapes[i]) t.shape.push_back(d);
            const auto* p = reinterpret_cast<const unsigned char*>(m->params.data() + m->offsets[i]);
            t.data.assign(p, p + param_floats(*m, i) * sizeof(float));
            f.tensors.push_back(std::move(t));
        }
        model::write_model_file(path, f);
        return 0;
    }, -1);
}

void lenet_free(lenet_model* m) { delete m; }

int lenet_input_shape(const lenet_model* m, int* channels, int* height, int* width) {
    return guarded([&] {
        require(m, "null model");
        if (channels) *channels = m->graph.c;
        if (height) *height = m->graph.h;
        if (width) *width = m->graph.w;
        return 0;
    }, -1);
}

int lenet_num_classes(const lenet_model* m) {
    return guarded([&] {
        require(m, "null model");
        return m->analysis.classes;
    }, -1);
}

const char* lenet_class_name(const lenet_model* m, int index) {
    return guarded([&]() -> const char* {
        require(m, "null model");
        require(index >= 0 && index < m->analysis.classes, "class index out of range");
        return m->class_names[size_t(index)].c_str();
    }, nullptr);
}

int lenet_predict(lenet_model* m, const float* images, int n, float* logits) {
    return guarded([&] { return predict(m, images, n, logits); }, -1);
}

int lenet_predict_u8(lenet_model* m, const uint8_t* images, int n, float* logits) {
    return guarded([&] { return predict(m, images, n, logits); }, -1);
}

int lenet_classify_u8(lenet_model* m, const uint8_t* images, int n, int32_t* classes) {
    return guarded([&] {
        require(classes, "null argument");
        const int K = m ? m->analysis.classes : 0;
        std::vector<float> logits(size_t(std::max(n, 0)) * size_t(K));
        predict(m, images, n, logits.data());
        for (int i = 0; i < n; ++i) {
            const float* z = logits.data() + size_t(i) * K;
            classes[i] = int32_t(std::max_element(z, z + K) - z);
        }
        return 0;
    }, -1);
}

int lenet_train_step(lenet_model* m, const float* images, const int32_t* labels, int n, float lr, float momentum,
                     float* loss) {
    return guarded([&] { return train_step(m, images, labels, n, lr, momentum, loss); }, -1);
}

int lenet_train_step_u8(lenet_model* m, const uint8_t* images, const int32_t* labels, int n, float lr,
                        float momentum, float* loss) {
    return guarded([&] { return train_step(m, images, labels, n, lr, momentum, loss); }, -1);
}

}  // extern "C"
