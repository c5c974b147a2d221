// Python bindings of the ops (lenet._core). Every argument is validated here with a clear Python exception
// (TypeError for a wrong type or dtype, ValueError for a wrong shape, layout or value) before the GIL is
// released and the C++ op runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <memory>
#include <limits>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <string>
#include <vector>

#include "../core/aligned.h"
#include "../core/cpu.h"
#include "../kernels/bf16/bf16_dispatch.h"
#include "../core/dispatch.h"
#include "../core/probe.h"
#include "../core/threadpool.h"
#include "../ops/block.h"
#include "../ops/ops.h"
#include "../model/graph.h"
#include "../model/json.h"
#include "../model/model_file.h"
#include "../model/network.h"
#include "../model/qnetwork.h"
#include "../kernels/int8/int8_dispatch.h"
#include "../ops/train_step.h"

namespace py = pybind11;
using namespace lenet;

void bind_int8_kernels(py::module_& m);  // int8_kernels.cpp: the int8 microkernels, for tests
void bind_bf16_kernels(py::module_& m);  // bf16_kernels.cpp: the bf16 kernels, for tests

namespace {

using Shape = std::vector<ptrdiff_t>;
constexpr ptrdiff_t kAny = -1;

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// A C-contiguous array of dtype T with the expected rank and sizes (kAny matches any size; a null `expect`
// accepts any shape).
template <class T>
py::array_t<T> checked(const py::handle& obj, const char* name, const Shape* expect, bool writable = false) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array, got " +
                             std::string(py::str(py::type::of(obj).attr("__name__"))));
    py::array a = py::reinterpret_borrow<py::array>(obj);
    if (!a.dtype().is(py::dtype::of<T>()))
        throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(py::dtype::of<T>())) +
                             ", got " + std::string(py::str(a.dtype())));
    if (expect && a.ndim() != py::ssize_t(expect->size()))
        throw py::value_error(std::string(name) + " must have " + std::to_string(expect->size()) +
                              " dimensions, got shape " + shape_str(a));
    for (size_t i = 0; expect && i < expect->size(); ++i)
        if ((*expect)[i] != kAny && a.shape(py::ssize_t(i)) != (*expect)[i])
            throw py::value_error(std::string(name) + " has shape " + shape_str(a) + ": dimension " +
                                  std::to_string(i) + " must be " + std::to_string((*expect)[i]));
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writable");
    if (reinterpret_cast<uintptr_t>(a.data()) % alignof(T))
        throw py::value_error(std::string(name) + " is not aligned to its dtype");
    return py::reinterpret_borrow<py::array_t<T>>(a);
}
template <class T>
py::array_t<T> checked(const py::handle& obj, const char* name, const Shape& expect, bool writable = false) {
    return checked<T>(obj, name, &expect, writable);
}

// Output arrays come from a pool of 64-byte-aligned buffers that returns memory to a free list (not to the OS) when
// the numpy array dies: a training step reuses the previous step's buffers instead of faulting in fresh pages
// (about a quarter of a small step's time otherwise). Used only with the GIL held, which serialises it.
class BufferPool {
public:
    static BufferPool& instance() {
        static BufferPool* pool = new BufferPool;  // leaked on purpose: arrays may outlive static destruction
        return *pool;
    }
    float* take(size_t floats, size_t& bytes) {
        bytes = (std::max<size_t>(floats, 1) * sizeof(float) + 63) / 64 * 64;
        auto& list = free_[bytes];
        if (!list.empty()) {
            void* p = list.back();
            list.pop_back();
            cached_ -= bytes;
            return static_cast<float*>(p);
        }
        void* p = line_alloc(bytes);
        if (!p) throw std::bad_alloc();
        return static_cast<float*>(p);
    }
    void give(void* p, size_t bytes) {
        if (cached_ + bytes > kMaxCachedBytes) {
            std::free(p);
            return;
        }
        free_[bytes].push_back(p);
        cached_ += bytes;
    }

private:
    static constexpr size_t kMaxCachedBytes = size_t(1) << 30;
    std::unordered_map<size_t, std::vector<void*>> free_;
    size_t cached_ = 0;
};

// Wraps one op call: releases the GIL, then takes the engine lock (the thread pool and thread 0's scratch serve one
// op at a time, so ops called from several Python threads run one after the other instead of racing), and adds the
// call's wall time to a process-wide counter, so the benchmark can tell time inside kernels from time in Python,
// bindings and allocation.
std::atomic<int64_t> g_kernel_ns{0};
std::mutex g_engine;
struct EngineLock {
    py::gil_scoped_release nogil;  // released first: a thread waiting for the engine must not hold the GIL
    std::lock_guard<std::mutex> lock{g_engine};
};
struct KernelCall {
    EngineLock engine;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    ~KernelCall() {
        g_kernel_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
                           .count();
    }
};

struct PooledBuffer {
    void* ptr;
    size_t bytes;
};

py::array_t<float> empty(const Shape& shape) {
    size_t floats = 1;
    for (ptrdiff_t d : shape) floats *= size_t(d);
    size_t bytes = 0;
    float* data = BufferPool::instance().take(floats, bytes);
    auto* owner = new PooledBuffer{data, bytes};
    py::capsule base(owner, [](void* o) {
        auto* b = static_cast<PooledBuffer*>(o);
        BufferPool::instance().give(b->ptr, b->bytes);
        delete b;
    });
    return py::array_t<float>(std::vector<py::ssize_t>(shape.begin(), shape.end()), data, base);
}

void positive(int v, const char* name) {
    if (v < 1) throw py::value_error(std::string(name) + " must be at least 1, got " + std::to_string(v));
}

// Lanes-layout activation: (nblk, C, H, W, L).
struct Act4 {
    py::array_t<float> a;
    int nblk, c, h, w, lanes;
};
Act4 act4(const py::handle& obj, const char* name) {
    auto a = checked<float>(obj, name, {kAny, kAny, kAny, kAny, kAny});
    Act4 r{a, int(a.shape(0)), int(a.shape(1)), int(a.shape(2)), int(a.shape(3)), int(a.shape(4))};
    if (r.nblk < 1 || r.c < 1 || r.h < 1 || r.w < 1 || r.lanes < 1)
        throw py::value_error(std::string(name) + " has an empty dimension: shape " + shape_str(a));
    return r;
}

ConvShape conv_shape(const Act4& x, int oc, int kh, int kw, int sh, int sw, int ph, int pw) {
    positive(kh, "kernel height");
    positive(kw, "kernel width");
    positive(sh, "stride");
    positive(sw, "stride");
    if (ph < 0 || pw < 0) throw py::value_error("padding must be >= 0");
    if (ph >= kh || pw >= kw) throw py::value_error("padding must be smaller than the kernel");
    ConvShape s{x.c, x.h, x.w, oc, 0, 0, kh, kw, sh, sw, ph, pw, x.lanes};
    if (x.h + 2 * ph < kh || x.w + 2 * pw < kw)
        throw py::value_error("the window (" + std::to_string(kh) + "x" + std::to_string(kw) +
                              ") is larger than the padded input (" + std::to_string(x.h + 2 * ph) + "x" +
                              std::to_string(x.w + 2 * pw) + ")");
    ops::conv_output_size(s);
    return s;
}

ops::ConvAlgo conv_algo(const std::string& name) {
    if (name == "auto") return ops::ConvAlgo::Auto;
    if (name == "im2col") return ops::ConvAlgo::Im2col;
    if (name == "direct") return ops::ConvAlgo::Direct;
    throw py::value_error("algo must be 'auto', 'im2col' or 'direct', got '" + name + "'");
}

ops::ConvAlgo checked_algo(const std::string& name, const ConvShape& s, bool backward) {
    const ops::ConvAlgo algo = conv_algo(name);
    if (algo == ops::ConvAlgo::Direct && !ops::conv_direct_possible(s, backward))
        throw py::value_error(std::string("algo='direct' needs stride 1, a table with direct kernels and 16 lanes") +
                              (backward ? "" : " (or 1)"));
    return algo;
}

ops::PoolKind pool_kind(const std::string& name) {
    if (name == "max") return ops::PoolKind::Max;
    if (name == "avg") return ops::PoolKind::Avg;
    throw py::value_error("pool kind must be 'max' or 'avg', got '" + name + "'");
}

ops::Activation activation(const std::string& name) {
    if (name == "relu") return ops::Activation::Relu;
    if (name == "tanh") return ops::Activation::Tanh;
    throw py::value_error("activation must be 'relu' or 'tanh', got '" + name + "'");
}

const float* opt_bias(const py::object& b, int n, const char* name, py::array_t<float>& keep) {
    if (b.is_none()) return nullptr;
    keep = checked<float>(b, name, {n});
    return keep.data();
}
float* opt_bias_out(const py::object& b, int n, const char* name, py::array_t<float>& keep) {
    if (b.is_none()) return nullptr;
    keep = checked<float>(b, name, {n}, true);
    return keep.mutable_data();
}

// A convolution backward's gradients: dw and db accumulated into the caller's grad_weight and grad_bias (None: not
// computed), dx a new array when needed (else None).
struct ConvGrads {
    py::array_t<float> dw_keep, db_keep, dx_keep;
    float *dw, *db, *dx = nullptr;
    ConvGrads(const Act4& x, const ConvShape& s, py::handle dw_, const py::object& db_, bool need_dx)
        : dw_keep(checked<float>(dw_, "grad_weight", {s.oc, s.ic, s.kh, s.kw}, true)),
          dw(dw_keep.mutable_data()), db(opt_bias_out(db_, s.oc, "grad_bias", db_keep)) {
        if (!need_dx) return;
        dx_keep = empty({x.nblk, s.ic, s.ih, s.iw, s.lanes});
        dx = dx_keep.mutable_data();
    }
    py::object result() const { return dx ? py::object(dx_keep) : py::object(py::none()); }
};

// The convolution's shape in a fused conv-pool layer (stride 1) of x and the checked weight w [oc][x.c][kh][kw]:
// at least one output channel and an output no smaller than the 2x2 pooling window.
ConvShape conv_pool_shape(const Act4& x, const py::array_t<float>& w, std::pair<int, int> padding) {
    const ConvShape s = conv_shape(x, int(w.shape(0)), int(w.shape(2)), int(w.shape(3)), 1, 1, padding.first,
                                   padding.second);
    positive(s.oc, "output channels");
    if (s.oh < 2 || s.ow < 2) throw py::value_error("the convolution's output is smaller than the 2x2 pooling window");
    return s;
}

// Stride 1, 1 or 16 lanes: the convolution, 2x2 stride-2 max pooling and optional ReLU in one kernel -> (y, argmax:
// at 16 lanes the window position 0-3 of each output's maximum, or -1 where the ReLU zeroed it, else None).
py::tuple conv_pool_forward(py::handle x_, py::handle w_, py::object b_, std::pair<int, int> padding, bool relu) {
    Act4 x = act4(x_, "x");
    if (x.lanes != 1 && x.lanes != ops::TrainStep::kLanes)
        throw py::value_error("conv_pool_forward runs on 1 lane (one sample) or 16, got " + std::to_string(x.lanes));
    auto w = checked<float>(w_, "weight", {kAny, x.c, kAny, kAny});
    const ConvShape s = conv_pool_shape(x, w, padding);
    py::array_t<float> bk;
    const float* b = opt_bias(b_, s.oc, "bias", bk);
    auto y = empty({x.nblk, s.oc, s.oh / 2, s.ow / 2, x.lanes});
    py::object argmax = py::none();
    float* ap = nullptr;
    if (x.lanes > 1) {
        auto a = empty({x.nblk, s.oc, s.oh / 2, s.ow / 2, x.lanes});
        ap = a.mutable_data();
        argmax = a;
    }
    float* yp = y.mutable_data();
    {
        KernelCall call;
        ops::conv_pool_forward(s, x.nblk, x.a.data(), w.data(), b, yp, ap, relu);
    }
    return py::make_tuple(y, argmax);
}

// Its backward at 16 lanes, as the captured training step runs it (there the fused layer has no autograd op of its
// own; this is for tests): dx (or None), and dw, db accumulated into grad_weight, grad_bias (may be None).
py::object conv_pool_backward(py::handle x_, py::handle w_, py::handle argmax_, py::handle dy_, py::handle dw_,
                              py::object db_, std::pair<int, int> padding, bool need_dx) {
    Act4 x = act4(x_, "x");
    if (x.lanes != ops::TrainStep::kLanes)
        throw py::value_error("conv_pool_backward runs on 16 lanes, got " + std::to_string(x.lanes));
    auto w = checked<float>(w_, "weight", {kAny, x.c, kAny, kAny});
    const ConvShape s = conv_pool_shape(x, w, padding);
    const Shape pooled{x.nblk, s.oc, s.oh / 2, s.ow / 2, s.lanes};
    auto argmax = checked<float>(argmax_, "argmax", pooled);
    auto dy = checked<float>(dy_, "grad_output", pooled);
    ConvGrads g(x, s, dw_, db_, need_dx);
    {
        KernelCall call;
        ops::conv_pool_backward(s, x.nblk, x.a.data(), w.data(), argmax.data(), dy.data(), g.dx, g.dw, g.db);
    }
    return g.result();
}

py::array_t<float> conv2d_forward(py::handle x_, py::handle w_, py::object b_, std::pair<int, int> stride,
                                  std::pair<int, int> padding, const std::string& algo_name) {
    Act4 x = act4(x_, "x");
    auto w = checked<float>(w_, "weight", {kAny, x.c, kAny, kAny});
    ConvShape s = conv_shape(x, int(w.shape(0)), int(w.shape(2)), int(w.shape(3)), stride.first, stride.second,
                             padding.first, padding.second);
    positive(s.oc, "output channels");
    py::array_t<float> bk;
    const float* b = opt_bias(b_, s.oc, "bias", bk);
    const ops::ConvAlgo algo = checked_algo(algo_name, s, /*backward=*/false);
    auto y = empty({x.nblk, s.oc, s.oh, s.ow, s.lanes});
    float* yp = y.mutable_data();
    {
        KernelCall call;
        ops::conv2d_forward(s, x.nblk, x.a.data(), w.data(), b, yp, algo);
    }
    return y;
}

py::object conv2d_backward(py::handle x_, py::handle w_, py::handle dy_, py::handle dw_, py::object db_,
                           std::pair<int, int> stride, std::pair<int, int> padding, bool need_dx,
                           const std::string& algo_name) {
    Act4 x = act4(x_, "x");
    auto w = checked<float>(w_, "weight", {kAny, x.c, kAny, kAny});
    ConvShape s = conv_shape(x, int(w.shape(0)), int(w.shape(2)), int(w.shape(3)), stride.first, stride.second,
                             padding.first, padding.second);
    const ops::ConvAlgo algo = checked_algo(algo_name, s, /*backward=*/true);
    auto dy = checked<float>(dy_, "grad_output", {x.nblk, s.oc, s.oh, s.ow, s.lanes});
    ConvGrads g(x, s, dw_, db_, need_dx);
    {
        KernelCall call;
        ops::conv2d_backward(s, x.nblk, x.a.data(), w.data(), dy.data(), g.dx, g.dw, g.db, algo);
    }
    return g.result();
}

ConvShape pool_shape(const Act4& x, std::pair<int, int> kernel, std::pair<int, int> stride) {
    ConvShape s = conv_shape(x, x.c, kernel.first, kernel.second, stride.first, stride.second, 0, 0);
    return s;
}

py::array_t<float> pool2d_forward(const std::string& kind, py::handle x_, std::pair<int, int> kernel,
                                  std::pair<int, int> stride, bool relu) {
    const ops::PoolKind k = pool_kind(kind);
    if (relu && k != ops::PoolKind::Max) throw py::value_error("relu=True fuses only with max pooling");
    Act4 x = act4(x_, "x");
    ConvShape s = pool_shape(x, kernel, stride);
    auto y = empty({x.nblk, s.ic, s.oh, s.ow, s.lanes});
    float* yp = y.mutable_data();
    {
        KernelCall call;
        ops::pool2d_forward(k, s, x.nblk, x.a.data(), yp, relu);
    }
    return y;
}

py::array_t<float> pool2d_backward(const std::string& kind, py::handle x_, py::handle y_, py::handle dy_,
                                   std::pair<int, int> kernel, std::pair<int, int> stride, bool relu) {
    const ops::PoolKind k = pool_kind(kind);
    if (relu && k != ops::PoolKind::Max) throw py::value_error("relu=True fuses only with max pooling");
    Act4 x = act4(x_, "x");
    ConvShape s = pool_shape(x, kernel, stride);
    const Shape yshape{x.nblk, s.ic, s.oh, s.ow, s.lanes};
    auto y = checked<float>(y_, "output", yshape);
    auto dy = checked<float>(dy_, "grad_output", yshape);
    auto dx = empty({x.nblk, s.ic, s.ih, s.iw, s.lanes});
    float* dxp = dx.mutable_data();
    {
        KernelCall call;
        ops::pool2d_backward(k, s, x.nblk, x.a.data(), y.data(), dy.data(), dxp, relu);
    }
    return dx;
}

// With relu, the ReLU that follows the layer runs in the same call, in place on its output.
py::array_t<float> linear_forward(py::handle x_, py::handle w_, py::object b_, bool relu) {
    auto x = checked<float>(x_, "x", {kAny, kAny, kAny});
    const int nblk = int(x.shape(0)), in = int(x.shape(1)), L = int(x.shape(2));
    auto w = checked<float>(w_, "weight", {kAny, in});
    const int out = int(w.shape(0));
    positive(nblk, "blocks");
    positive(in, "in_features");
    positive(out, "out_features");
    positive(L, "lanes");
    py::array_t<float> bk;
    const float* b = opt_bias(b_, out, "bias", bk);
    auto y = empty({nblk, out, L});
    float* yp = y.mutable_data();
    {
        KernelCall call;
        ops::linear_forward(nblk, L, in, out, x.data(), w.data(), b, yp, relu);
    }
    return y;
}

// output: the output of a linear_forward with relu (None without): grad_output is then the ReLU's, taken back
// through it first.
py::object linear_backward(py::handle x_, py::handle w_, py::handle dy_, py::handle dw_, py::object db_,
                           bool need_dx, py::object output_) {
    auto x = checked<float>(x_, "x", {kAny, kAny, kAny});
    const int nblk = int(x.shape(0)), in = int(x.shape(1)), L = int(x.shape(2));
    auto w = checked<float>(w_, "weight", {kAny, in});
    const int out = int(w.shape(0));
    positive(nblk, "blocks");
    positive(L, "lanes");
    auto dy = checked<float>(dy_, "grad_output", {nblk, out, L});
    auto dw = checked<float>(dw_, "grad_weight", {out, in}, true);
    py::array_t<float> dbk;
    float* db = opt_bias_out(db_, out, "grad_bias", dbk);
    py::array_t<float> dx;
    float* dxp = nullptr;
    if (need_dx) {
        dx = empty({nblk, in, L});
        dxp = dx.mutable_data();
    }
    float* dwp = dw.mutable_data();
    py::array_t<float> y;
    if (!output_.is_none()) y = checked<float>(output_, "output", {nblk, out, L});
    {
        KernelCall call;
        ops::linear_backward(nblk, L, in, out, x.data(), w.data(), dy.data(), dxp, dwp, db,
                             output_.is_none() ? nullptr : y.data());
    }
    return need_dx ? py::object(dx) : py::object(py::none());
}

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

py::array_t<float> activation_forward(const std::string& kind, py::handle x_) {
    const ops::Activation a = activation(kind);
    auto x = checked<float>(x_, "x", nullptr);
    auto y = empty(shape_of(x));
    float* yp = y.mutable_data();
    {
        KernelCall call;
        ops::activation_forward(a, x.size(), x.data(), yp);
    }
    return y;
}

py::array_t<float> activation_backward(const std::string& kind, py::handle y_, py::handle dy_) {
    const ops::Activation a = activation(kind);
    auto y = checked<float>(y_, "output", nullptr);
    auto dy = checked<float>(dy_, "grad_output", shape_of(y));
    auto dx = empty(shape_of(y));
    float* dxp = dx.mutable_data();
    {
        KernelCall call;
        ops::activation_backward(a, y.size(), y.data(), dy.data(), dxp);
    }
    return dx;
}

py::tuple softmax_xent(py::handle logits_, py::handle labels_, float scale) {
    auto logits = checked<float>(logits_, "logits", {kAny, kAny, kAny});
    const int nblk = int(logits.shape(0)), K = int(logits.shape(1)), L = int(logits.shape(2));
    positive(nblk, "blocks");
    positive(K, "classes");
    positive(L, "lanes");
    auto labels = checked<int32_t>(labels_, "labels", {ptrdiff_t(nblk) * L});
    const int32_t* lp = labels.data();
    for (ptrdiff_t i = 0; i < labels.size(); ++i)
        if (lp[i] < -1 || lp[i] >= K)
            throw py::value_error("labels[" + std::to_string(i) + "] = " + std::to_string(lp[i]) +
                                  " is outside [0, " + std::to_string(K) + ") (-1 marks padding)");
    auto loss = empty({ptrdiff_t(nblk) * L});
    auto dlogits = empty({nblk, K, L});
    float *lossp = loss.mutable_data(), *dp = dlogits.mutable_data();
    {
        KernelCall call;
        ops::softmax_xent(nblk, K, L, logits.data(), lp, scale, lossp, dp);
    }
    return py::make_tuple(loss, dlogits);
}

// The kernels' own entry points (tests call them directly; optimisers go through apply_update).
void sgd_update(py::handle w_, py::handle g_, py::handle v_, float lr, float momentum, float wd, bool nesterov) {
    auto w = checked<float>(w_, "param", {kAny}, true);
    auto g = checked<float>(g_, "grad", {w.shape(0)});
    auto v = checked<float>(v_, "momentum_buffer", {w.shape(0)}, true);
    ops::Update u;
    u.kind = ops::Update::Kind::Sgd;
    u.lr = lr, u.momentum = momentum, u.weight_decay = wd, u.nesterov = nesterov;
    u.w = w.mutable_data(), u.g = g.data(), u.s1 = v.mutable_data(), u.n = w.shape(0);
    KernelCall call;
    ops::apply_update(u);
}

void adam_update(py::handle w_, py::handle g_, py::handle m_, py::handle v_, float lr, float b1, float b2, float eps,
                 float wd, int step) {
    positive(step, "step");
    auto w = checked<float>(w_, "param", {kAny}, true);
    auto g = checked<float>(g_, "grad", {w.shape(0)});
    auto m = checked<float>(m_, "exp_avg", {w.shape(0)}, true);
    auto v = checked<float>(v_, "exp_avg_sq", {w.shape(0)}, true);
    ops::Update u;
    u.kind = ops::Update::Kind::Adam;
    u.lr = lr, u.b1 = b1, u.b2 = b2, u.eps = eps, u.weight_decay = wd, u.step = step;
    u.w = w.mutable_data(), u.g = g.data(), u.s1 = m.mutable_data(), u.s2 = v.mutable_data(), u.n = w.shape(0);
    KernelCall call;
    ops::apply_update(u);
}

// A training batch straight from the uint8 data set: images[indices] scaled by 1/255 into the lanes layout
// (nblk, 1, H, W, L), zeros in the padding lanes. One pass, no intermediate float copy of the batch.
// A data set of uint8 images (N, H, W) or (N, 1, H, W) and the rows of a batch, checked: (images, indices, H*W).
struct ImageRows {
    py::array_t<uint8_t> images;
    py::array_t<int64_t> indices;
    ptrdiff_t hw;
};
ImageRows image_rows(py::handle images_, py::handle indices_) {
    auto images = checked<uint8_t>(images_, "images", nullptr);
    if (images.ndim() != 3 && !(images.ndim() == 4 && images.shape(1) == 1))
        throw py::value_error("images must be (N, H, W) or (N, 1, H, W) uint8, got shape " + shape_str(images));
    auto indices = checked<int64_t>(indices_, "indices", {kAny});
    const ptrdiff_t n = images.shape(0), batch = indices.shape(0);
    if (batch < 1) throw py::value_error("indices is empty");
    const int64_t* idx = indices.data();
    for (ptrdiff_t i = 0; i < batch; ++i)
        if (idx[i] < 0 || idx[i] >= n)
            throw py::value_error("indices[" + std::to_string(i) + "] = " + std::to_string(idx[i]) +
                                  " is outside [0, " + std::to_string(n) + ")");
    return {images, indices, images.shape(images.ndim() - 2) * images.shape(images.ndim() - 1)};
}

py::array_t<float> pack_images(py::handle images_, py::handle indices_, int lanes) {
    const ImageRows r = image_rows(images_, indices_);
    positive(lanes, "lanes");
    const ptrdiff_t batch = r.indices.shape(0), hw = r.hw, nblk = (batch + lanes - 1) / lanes;
    auto out = empty({nblk, 1, r.images.shape(r.images.ndim() - 2), r.images.shape(r.images.ndim() - 1), lanes});
    float* o = out.mutable_data();
    const uint8_t* src = r.images.data();
    const int64_t* idx = r.indices.data();
    KernelCall call;
    const KernelTable& k = kernels();
    ThreadPool::instance().parallel_for(int(nblk), [&](int b, int) {
        ops::block::pack(k, int(std::min<ptrdiff_t>(lanes, batch - b * lanes)), size_t(hw), lanes, src,
                         idx + b * lanes, o + b * hw * lanes);
    });
    return out;
}

// Raw microkernel access for tests: C = op(A) @ B (gemm_nn, A transposed when trans_a; with ks, the sum over
// k in ks only: op(A)[:, ks] @ B[ks]) and C = A @ B^T.
py::array_t<float> gemm_nn(py::handle a_, py::handle b_, bool trans_a, py::object ks_) {
    auto a = checked<float>(a_, "a", {kAny, kAny});
    const int M = int(trans_a ? a.shape(1) : a.shape(0)), K = int(trans_a ? a.shape(0) : a.shape(1));
    auto b = checked<float>(b_, "b", {K, kAny});
    const int N = int(b.shape(1));
    std::vector<int> ks;
    if (!ks_.is_none())
        for (py::handle v : ks_) {
            ks.push_back(v.cast<int>());
            if (ks.back() < 0 || ks.back() >= K) throw py::value_error("ks: every index must be in [0, K)");
        }
    auto c = empty({M, N});
    float* cp = c.mutable_data();
    const ptrdiff_t rsa = trans_a ? 1 : K, csa = trans_a ? M : 1;
    const int nk = ks_.is_none() ? K : int(ks.size());
    const int* kp = ks_.is_none() ? nullptr : ks.data();
    KernelCall call;
    ThreadPool::instance().parallel_for(1, [&](int, int) {
        kernels().gemm_nn(M, N, nk, a.data(), rsa, csa, b.data(), N, cp, N, 0, kp);
    });
    return c;
}

py::array_t<float> gemm_nt(py::handle a_, py::handle b_) {
    auto a = checked<float>(a_, "a", {kAny, kAny});
    const int M = int(a.shape(0)), K = int(a.shape(1));
    auto b = checked<float>(b_, "b", {kAny, K});
    const int N = int(b.shape(0));
    auto c = empty({M, N});
    float* cp = c.mutable_data();
    KernelCall call;
    ThreadPool::instance().parallel_for(1, [&](int, int) {
        kernels().gemm_nt(M, N, K, a.data(), K, b.data(), K, cp, N, 0);
    });
    return c;
}

// The active table's dense_gather for tests: x [in][L] and dy [out][L] into samples [col0, col0 + L) of a batch of B:
// (xP [ceil(in / 48)][B][48] x^T in panels, dyT [out][B]), both 64-byte aligned and first filled with -1.
py::tuple dense_gather(py::handle x_, py::handle dy_, ptrdiff_t col0, ptrdiff_t B, bool stream) {
    auto x = checked<float>(x_, "x", {kAny, kAny});
    const int in = int(x.shape(0)), L = int(x.shape(1));
    auto dy = checked<float>(dy_, "dy", {kAny, L});
    const int out = int(dy.shape(0)), P = ops::block::kDensePanel;
    if (col0 < 0 || col0 + L > B) throw py::value_error("samples [col0, col0 + L) must lie in [0, B)");
    const ptrdiff_t panels = (in + P - 1) / P;
    LineVector<float> xP(size_t(panels * B * P), -1.0f), dyT(size_t(out) * B, -1.0f);
    {
        KernelCall call;  // (releases the GIL until the block's end)
        ThreadPool::instance().parallel_for(1, [&](int, int) {
            kernels().dense_gather(L, in, out, col0, B, P, x.data(), dy.data(), xP.data(), dyT.data(), stream);
        });
    }
    auto xo = empty({panels, B, P});
    auto yo = empty({out, B});
    std::copy(xP.begin(), xP.end(), xo.mutable_data());
    std::copy(dyT.begin(), dyT.end(), yo.mutable_data());
    return py::make_tuple(xo, yo);
}

// The thread pool's phases for tests: a job of n0 tasks in phase 0 and n1 in phase 1 on the current threads. Each
// phase-0 task spins for about `spin` iterations (the first one for 8 times as long, so that threads finish phase 0 at
// different times) and then counts itself done; each phase-1 task waits (wait_for) until all are done. Returns per
// task (index): [thread, runs, phase-0 tasks done when its wait ended (phase 1 only, else -1)].
py::array_t<int64_t> pool_phases_trace(int n0, int n1, int spin) {
    if (n0 < 0 || n1 < 0 || spin < 0) throw py::value_error("n0, n1 and spin must be >= 0");
    const int n = n0 + n1;
    std::vector<std::atomic<int64_t>> rows(size_t(n) * 3);
    for (auto& v : rows) v.store(-1);
    for (int t = 0; t < n; ++t) rows[size_t(t) * 3 + 1].store(0);
    std::atomic<int> done{0};
    std::atomic<int64_t> sink{0};
    {
        py::gil_scoped_release release;
        ThreadPool::instance().parallel_phases({n0, n1}, [&](int t, int thread) {
            std::atomic<int64_t>* row = rows.data() + size_t(t) * 3;
            row[0].store(thread);
            row[1].fetch_add(1);
            if (t < n0) {
                int64_t acc = 0;
                for (int64_t i = 0, m = int64_t(spin) * (t == 0 ? 8 : 1); i < m; ++i) acc += i ^ (acc >> 3);
                sink.fetch_add(acc);
                done.fetch_add(1, std::memory_order_release);
                return;
            }
            wait_for(done, n0);
            row[2].store(done.load());
        });
    }
    auto out = py::array_t<int64_t>({py::ssize_t(n), py::ssize_t(3)});
    for (size_t i = 0; i < rows.size(); ++i) out.mutable_data()[i] = rows[i].load();
    return out;
}

// A graph (model/graph.h) from its JSON text, with its parameter arrays checked against the shapes it implies;
// the arrays are kept alive in `keep`.
struct GraphArrays {
    model::Graph graph;
    model::Analysis analysis;
    std::vector<const float*> params;
    std::vector<float*> grads;
};
GraphArrays graph_arrays(const std::string& graph_json, py::list params, py::object grads, py::list& keep) {
    GraphArrays g;
    g.graph = model::graph_from_json(json::parse(graph_json));
    g.analysis = model::analyse(g.graph);
    const auto& shapes = g.analysis.param_shapes;
    // Gradient entries may be None: a frozen parameter, whose gradient is not computed.
    auto take = [&](py::list arrays, const char* what, bool writable) {
        if (arrays.size() != shapes.size())
            throw py::value_error("the graph has " + std::to_string(shapes.size()) + " parameters, got " +
                                  std::to_string(arrays.size()) + " " + what);
        std::vector<float*> out;
        for (size_t i = 0; i < shapes.size(); ++i) {
            if (writable && arrays[i].is_none()) {
                out.push_back(nullptr);
                continue;
            }
            const std::string name = std::string(what) + "[" + std::to_string(i) + "]";
            auto a = checked<float>(arrays[i], name.c_str(), Shape(shapes[i].begin(), shapes[i].end()), writable);
            keep.append(a);
            out.push_back(static_cast<float*>(a.request().ptr));
        }
        return out;
    };
    for (float* p : take(params, "parameters", false)) g.params.push_back(p);
    if (!grads.is_none()) g.grads = take(grads.cast<py::list>(), "gradients", true);
    return g;
}

// The optimiser update a captured step applies as it goes (Optimizer.next_update() in lenet/optim.py), a dict:
// kind "sgd" (lr, momentum, weight_decay, nesterov) or "adam" (lr, b1, b2, eps, weight_decay, step), and the flat
// float32 buffers params, grads and state ([velocity] or [exp_avg, exp_avg_sq]), which the dict keeps alive.
ops::Update checked_update(py::handle spec_) {
    if (!py::isinstance<py::dict>(spec_)) throw py::type_error("update must be a dict (Optimizer.next_update())");
    py::dict spec = py::reinterpret_borrow<py::dict>(spec_);
    auto item = [&](const char* key) -> py::object {
        if (!spec.contains(key)) throw py::value_error(std::string("update has no '") + key + "'");
        return spec[key];
    };
    ops::Update u;
    const std::string kind = py::cast<std::string>(item("kind"));
    if (kind != "sgd" && kind != "adam") throw py::value_error("update kind must be 'sgd' or 'adam', got '" + kind + "'");
    u.kind = kind == "sgd" ? ops::Update::Kind::Sgd : ops::Update::Kind::Adam;
    auto params = checked<float>(item("params"), "update params", {kAny}, true);
    auto grads = checked<float>(item("grads"), "update grads", {params.shape(0)});
    py::list state = py::cast<py::list>(item("state"));
    if (py::len(state) != (u.kind == ops::Update::Kind::Sgd ? 1u : 2u))
        throw py::value_error("update state must hold " + std::string(kind == "sgd" ? "1 buffer" : "2 buffers"));
    u.n = params.shape(0);
    u.w = params.mutable_data();
    u.g = grads.data();
    u.s1 = checked<float>(state[0], "update state", {u.n}, true).mutable_data();
    if (u.kind == ops::Update::Kind::Adam) u.s2 = checked<float>(state[1], "update state", {u.n}, true).mutable_data();
    u.lr = py::cast<float>(item("lr"));
    u.weight_decay = py::cast<float>(item("weight_decay"));
    if (u.kind == ops::Update::Kind::Sgd) {
        u.momentum = py::cast<float>(item("momentum"));
        u.nesterov = py::cast<bool>(item("nesterov"));
    } else {
        u.b1 = py::cast<float>(item("b1"));
        u.b2 = py::cast<float>(item("b2"));
        u.eps = py::cast<float>(item("eps"));
        u.step = py::cast<int>(item("step"));
        positive(u.step, "update step");
    }
    return u;
}

// The captured training step over a graph and its parameter and gradient arrays (see lenet/capture.py).
class PyTrainStep {
public:
    PyTrainStep(const std::string& graph_json, py::list params, py::list grads, const std::string& precision) {
        if (precision != "fp32" && precision != "bf16")
            throw py::value_error("precision must be 'fp32' or 'bf16', not '" + precision + "'");
        GraphArrays g = graph_arrays(graph_json, params, grads, keep_);
        model::Plan p = model::plan(g.graph, ops::TrainStep::kLanes, g.params, g.grads);
        input_floats_ = p.input_floats;
        classes_ = p.classes;
        step_ = std::make_unique<ops::TrainStep>(std::move(p.layers), p.input_floats, p.classes,
                                                 precision == "bf16" ? ops::Precision::Bf16 : ops::Precision::Fp32);
    }

    std::vector<int> bf16_conv_layers() const { return step_->bf16_conv_layers(); }

    double run(py::handle x_, py::handle labels_, float scale, py::handle update_) {
        auto x = checked<float>(x_, "x", nullptr);
        const ptrdiff_t L = ops::TrainStep::kLanes;
        if (x.ndim() < 2 || x.shape(x.ndim() - 1) != L || size_t(x.size()) % input_floats_ != 0 ||
            size_t(x.size()) / input_floats_ != size_t(x.shape(0)))
            throw py::value_error("x must be a batch in the lanes layout (nblk, C, H, W, 16) matching the input shape");
        const int nblk = int(x.shape(0));
        const int32_t* lp = checked_labels(labels_, nblk);
        const ops::Update u = update(update_);
        KernelCall call;
        return step_->run(nblk, x.data(), lp, scale, update_.is_none() ? nullptr : &u);
    }

    // The same on a batch gathered from a data set: images (N, H, W) or (N, 1, H, W) uint8, indices [B] the rows
    // of the batch, labels [ceil(B/16)*16]; each block's thread packs its own samples.
    double run_images(py::handle images_, py::handle indices_, py::handle labels_, float scale, py::handle update_) {
        const ImageRows r = model_image_rows(images_, indices_);
        const int n = int(r.indices.shape(0)), nblk = (n + ops::TrainStep::kLanes - 1) / ops::TrainStep::kLanes;
        const int32_t* lp = checked_labels(labels_, nblk);
        const ops::Update u = update(update_);
        KernelCall call;
        return step_->run(n, r.images.data(), r.indices.data(), lp, scale, update_.is_none() ? nullptr : &u);
    }
    // Several steps in one call, the same computation as one run_images call per step without a return to Python
    // between them (on a fast step, that return cost more than Python's own work: both the interpreter and the
    // step found their data evicted by the other). indices (S, B): the rows of S batches of B; labels
    // (S, ceil(B/16)*16) as run_images' for each; lrs (S,): each step's learning rate, which replaces the update's
    // lr (with Adam, step s is update number update["step"] + s). Returns the S per-step loss sums.
    py::array_t<double> run_image_batches(py::handle images_, py::handle indices_, py::handle labels_, float scale,
                                          py::handle update_, py::handle lrs_) {
        auto indices = checked<int64_t>(indices_, "indices", {kAny, kAny});
        const ptrdiff_t S = indices.shape(0), B = indices.shape(1);
        if (S < 1 || B < 1) throw py::value_error("indices must hold at least one batch of at least one row");
        const ImageRows r = model_image_rows(images_, indices.attr("reshape")(-1));
        const ptrdiff_t lanes = (B + ops::TrainStep::kLanes - 1) / ops::TrainStep::kLanes * ops::TrainStep::kLanes;
        const int32_t* lp = checked_labels(labels_, {S, lanes});
        if (update_.is_none()) throw py::value_error("run_image_batches takes the optimiser's update");
        ops::Update u = update(update_);
        auto lrs = checked<float>(lrs_, "lrs", {S});
        const float* lr = lrs.data();
        for (ptrdiff_t i = 0; i < S; ++i)
            if (!(lr[i] >= 0.0f && lr[i] < std::numeric_limits<float>::infinity()))
                throw py::value_error("lrs[" + std::to_string(i) + "] = " + std::to_string(lr[i]) +
                                      " is not a finite learning rate >= 0");
        py::array_t<double> losses(S);
        double* out = losses.mutable_data();
        const int step0 = u.step;
        KernelCall call;
        for (ptrdiff_t i = 0; i < S; ++i) {
            u.lr = lr[i];
            u.step = step0 + int(i);
            out[i] = step_->run(int(B), r.images.data(), r.indices.data() + i * B, lp + i * lanes, scale, &u);
        }
        return losses;
    }
    int classes() const { return classes_; }
    void check_update(py::handle spec) const { update(spec); }

private:
    // None: no update (a default Update, unused); else the checked update, which must cover this step's parameters.
    ops::Update update(py::handle spec) const {
        if (spec.is_none()) return {};
        const ops::Update u = checked_update(spec);
        try {
            step_->check_update(u);
        } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
        }
        return u;
    }
    // image_rows, for images of this model's input size.
    ImageRows model_image_rows(py::handle images_, py::handle indices_) const {
        const ImageRows r = image_rows(images_, indices_);
        if (size_t(r.hw) != input_floats_ / ops::TrainStep::kLanes)
            throw py::value_error("images of " + std::to_string(r.hw) + " pixels for a model that takes " +
                                  std::to_string(input_floats_ / ops::TrainStep::kLanes));
        return r;
    }
    // labels [nblk*16] int32, each a class or -1 (a padding lane); the array is the caller's argument, alive
    // for the call.
    const int32_t* checked_labels(py::handle labels_, int nblk) const {
        return checked_labels(labels_, Shape{ptrdiff_t(nblk) * ops::TrainStep::kLanes});
    }
    const int32_t* checked_labels(py::handle labels_, const Shape& shape) const {
        auto labels = checked<int32_t>(labels_, "labels", shape);
        const int32_t* lp = labels.data();
        const ptrdiff_t row = shape.back();
        for (ptrdiff_t i = 0; i < labels.size(); ++i)
            if (lp[i] < -1 || lp[i] >= classes_) {
                const std::string at = shape.size() == 1 ? std::to_string(i)
                                                         : std::to_string(i / row) + ", " + std::to_string(i % row);
                throw py::value_error("labels[" + at + "] = " + std::to_string(lp[i]) + " is outside [0, " +
                                      std::to_string(classes_) + ") (-1 marks padding)");
            }
        return lp;
    }
    py::list keep_;
    size_t input_floats_ = 0;
    int classes_ = 0;
    std::unique_ptr<ops::TrainStep> step_;
};

// Inference input, for Network and QNetwork: one image, (H, W) for one-channel models or (C, H, W), or a batch,
// (N, H, W) for one-channel models or (N, C, H, W); uint8 pixels (scaled by 1/255) or float32 in [0, 1]. Any other
// array type is converted by the caller (lenet.Model). Returns logits (classes,) for one image, (N, classes) for a
// batch. This is the whole of a batch-1 call's work outside the kernels, so it stays in C++.
std::string shape_text(std::initializer_list<int> dims) {
    std::string s = "(";
    for (int d : dims) s += (s.size() > 1 ? ", " : "") + (d < 0 ? std::string("N") : std::to_string(d));
    return s + ")";
}

struct ImageBatch {
    py::array a;  // C-contiguous, uint8 or float32
    py::ssize_t n;
    bool single, u8;
};
ImageBatch image_batch(const model::Graph& g, py::handle obj) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error("images must be a numpy array, got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
    auto a = py::reinterpret_borrow<py::array>(obj);
    const int type = a.dtype().num();
    const bool u8 = type == py::detail::npy_api::NPY_UBYTE_;
    if (!u8 && type != py::detail::npy_api::NPY_FLOAT_)
        throw py::type_error("images must be uint8 pixels (0-255) or float32 in [0, 1], got dtype " +
                             std::string(py::str(a.dtype())));
    // The trailing dimensions are one image: (H, W) (one-channel models only) or (C, H, W). One image alone is
    // (H, W) for one-channel models, so that (1, H, W) is a batch of one, else (C, H, W).
    const py::ssize_t nd = a.ndim();
    auto tail_is = [&](py::ssize_t from, bool with_channels) {
        if (nd - from != (with_channels ? 3 : 2)) return false;
        if (with_channels && a.shape(from++) != g.c) return false;
        return a.shape(from) == g.h && a.shape(from + 1) == g.w;
    };
    bool single = false;
    if (g.c == 1 ? tail_is(0, false) : tail_is(0, true)) single = true;
    else if (!((g.c == 1 && tail_is(1, false)) || tail_is(1, true)))
        throw py::value_error("images have shape " + shape_str(a) + "; this model takes one image " +
                              (g.c == 1 ? shape_text({g.h, g.w}) + " or a batch " + shape_text({-1, g.h, g.w}) + " or "
                                        : shape_text({g.c, g.h, g.w}) + " or a batch ") +
                              shape_text({-1, g.c, g.h, g.w}));
    const py::ssize_t n = single ? 1 : a.shape(0);
    if (n < 1) throw py::value_error("images is an empty batch");
    if (n > (1 << 30)) throw py::value_error("images must hold at most 2**30 samples, got " + std::to_string(n));
    if (!(a.flags() & py::array::c_style)) {  // a strided view: one contiguous copy
        a = py::reinterpret_steal<py::array>(py::detail::npy_api::get().PyArray_FromAny_(
            a.ptr(), a.dtype().release().ptr(), 0, 0, py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_, nullptr));
        if (!a) throw py::error_already_set();
    }
    return {a, n, single, u8};
}

template <class Net>
py::array_t<float> infer(const Net& net, py::handle obj) {
    const ImageBatch x = image_batch(net.graph(), obj);
    const model::Graph& g = net.graph();
    const size_t count = size_t(x.n) * size_t(g.c) * size_t(g.h) * size_t(g.w);
    if (!x.u8) {  // NaN or infinity: every exponent bit set (an integer test, which the compiler vectorises)
        const uint32_t* bits = static_cast<const uint32_t*>(x.a.data());
        uint32_t bad = 0;
        for (size_t i = 0; i < count; ++i) bad |= uint32_t((bits[i] & 0x7f800000u) == 0x7f800000u);
        if (bad) throw py::value_error("images contain NaN or infinity");
    }
    const int K = net.classes();
    py::array_t<float> out = x.single ? py::array_t<float>(K) : py::array_t<float>({x.n, py::ssize_t(K)});
    float* o = out.mutable_data();
    const void* p = x.a.data();
    KernelCall call;
    if (x.u8) net.predict(int(x.n), static_cast<const uint8_t*>(p), o);
    else net.predict(int(x.n), static_cast<const float*>(p), o);
    return out;
}

// images as inference takes them -> the same pixels as a C-contiguous (N, C*H*W) batch (for lenet.quantize).
py::array flat_batch(const model::Graph& g, py::handle images) {
    ImageBatch x = image_batch(g, images);
    return x.a.reshape({x.n, py::ssize_t(g.c) * g.h * g.w});
}

// Inference in one call (model/network.h) over a graph and the parameters of a Python model, read live: updates
// to the arrays in place (training, load_state_dict) are seen by the next call, and a parameter whose array was
// replaced (an optimiser moves them into one flat buffer) is picked up by re-planning at the next call.
// params: the model's parameter tensors (objects with a float32 array in `.data`).
class PyNetwork {
public:
    PyNetwork(std::string graph_json, py::list params) : graph_json_(std::move(graph_json)), params_(params) {
        for (py::handle t : params_) tensors_.push_back(t.ptr());
        build();
    }
    py::array_t<float> logits(py::handle x) {
        if (stale()) build();
        return infer(*net_, x);
    }
    py::array flat(py::handle x) const { return flat_batch(net_->graph(), x); }
    int classes() const { return net_->classes(); }

private:
    bool stale() const {  // one attribute read per parameter: a few tens of nanoseconds each
        static const py::str data("data");
        for (size_t i = 0; i < arrays_.size(); ++i) {
            PyObject* now = PyObject_GetAttr(tensors_[i], data.ptr());
            if (!now) throw py::error_already_set();
            Py_DECREF(now);  // still referenced by the tensor
            if (now != arrays_[i]) return true;
        }
        return false;
    }
    void build() {
        py::list arrays, keep;
        for (py::handle t : params_) arrays.append(t.attr("data"));
        GraphArrays g = graph_arrays(graph_json_, arrays, py::none(), keep);
        net_ = std::make_unique<model::Network>(g.graph, g.params);
        keep_ = keep;
        arrays_.clear();
        for (py::handle a : arrays) arrays_.push_back(a.ptr());
    }
    std::string graph_json_;
    py::list params_, keep_;  // the tensors, and their arrays as the network was planned on them
    std::vector<PyObject*> tensors_, arrays_;  // borrowed from params_ and keep_: each tensor and its .data then
    std::unique_ptr<model::Network> net_;
};

// Model files (model/model_file.h): (header JSON text, [(name, array)]) in and out.
const std::pair<const char*, py::dtype> kDtypes[] = {{"float32", py::dtype::of<float>()},
                                                     {"int32", py::dtype::of<int32_t>()},
                                                     {"int8", py::dtype::of<int8_t>()},
                                                     {"uint8", py::dtype::of<uint8_t>()}};

py::tuple read_model_file(const std::string& path) {
    model::ModelFile f;
    {
        py::gil_scoped_release nogil;
        f = model::read_model_file(path);
    }
    py::list tensors;
    for (const model::Tensor& t : f.tensors) {
        py::dtype dt = py::dtype::of<float>();
        for (const auto& [name, d] : kDtypes)
            if (t.dtype == name) dt = d;
        py::array a(dt, std::vector<ptrdiff_t>(t.shape.begin(), t.shape.end()));
        if (!t.data.empty()) std::memcpy(a.mutable_data(), t.data.data(), t.data.size());
        tensors.append(py::make_tuple(t.name, a));
    }
    return py::make_tuple(f.header.dump(), tensors);
}

model::ModelFile model_file_from(const std::string& header_json, py::list tensors) {
    model::ModelFile f;
    f.header = json::parse(header_json);
    if (!f.header.is(json::Value::Type::Object)) throw py::value_error("the header must be a JSON object");
    model::graph_from_json(f.header.at("graph", "header"));  // a file always holds a readable graph
    for (py::handle item : tensors) {
        auto pair = item.cast<std::pair<std::string, py::array>>();
        model::Tensor t;
        t.name = pair.first;
        py::array a = pair.second;
        for (const auto& [name, d] : kDtypes)
            if (a.dtype().is(d)) t.dtype = name;
        if (t.dtype.empty())
            throw py::type_error("tensor \"" + t.name + "\" has dtype " + std::string(py::str(a.dtype())) +
                                 "; a model file holds float32, int32, int8 or uint8");
        if (!(a.flags() & py::array::c_style))
            throw py::value_error("tensor \"" + t.name + "\" must be C-contiguous");
        for (py::ssize_t i = 0; i < a.ndim(); ++i) t.shape.push_back(a.shape(i));
        const auto* p = static_cast<const unsigned char*>(a.data());
        t.data.assign(p, p + a.nbytes());
        f.tensors.push_back(std::move(t));
    }
    return f;
}

void write_model_file(const std::string& path, const std::string& header_json, py::list tensors) {
    model::ModelFile f = model_file_from(header_json, tensors);
    py::gil_scoped_release nogil;
    model::write_model_file(path, f);
}

// int8 inference (model/qnetwork.h) over the content of a quantized model file; holds its own copy of the tensors.
class PyQNetwork {
public:
    PyQNetwork(const std::string& header_json, py::list tensors)
        : net_(model::make_qnetwork(model_file_from(header_json, tensors))) {}
    py::array_t<float> logits(py::handle x) { return infer(*net_, x); }
    int classes() const { return net_->classes(); }

private:
    std::unique_ptr<model::QNetwork> net_;
};

py::dict kernel_info() {
    const KernelTable& k = kernels();
    const std::string isa = k.isa;
    py::dict ops;
    const std::string direct = k.conv_direct_fwd && k.vector_floats > 1
                                   ? std::string(k.conv_direct_name) + " where lanes == 16 (or 1) and stride 1, else "
                                   : std::string();
    ops["conv2d_forward"] = direct + "im2col + " + k.gemm_nn_name;
    const std::string from_channels = " from " + std::to_string(ops::block::kWinogradMinChannels);
    const std::string winograd_dx = k.conv_winograd_name ? " (2x2 kernels" + from_channels + " output channels on: " +
                                                               std::string(k.conv_winograd_name) + ")"
                                                         : std::string();
    ops["conv2d_backward"] = (direct.empty() ? "" : k.conv_direct_dw_name + std::string(" (dW) where lanes == 16 and stride 1, else ")) +
                             std::string("im2col + ") + k.gemm_nt_name + " (dW); " +
                             (direct.empty() ? "" : k.conv_direct_name + std::string(" on padded dY (dX) where lanes == 16 and stride 1") +
                                                        winograd_dx + ", else ") +
                             k.gemm_nn_name + " + col2im (dX)";
    ops["conv2d_maxpool2d_fused"] = std::string(k.conv_pool_name) +
                                    " for conv (stride 1) -> ReLU -> 2x2 max pool: one sample at a time, and in "
                                    "training " +
                                    (model::fuses_every_conv_pool(16)
                                         ? std::string("every such pair")
                                         : "a first convolution whose output fills at least " +
                                               std::to_string(model::kFusedConvPoolMinFloats * sizeof(float) >> 20) +
                                               " MB per block of 16") +
                                    (k.conv_pool_winograd_name ? "; at 16 lanes, 2x2 and 5x5 kernels" + from_channels +
                                                                     " input channels on: " + k.conv_pool_winograd_name
                                                               : std::string()) +
                                    (k.conv_pool_dx_winograd_name
                                         ? std::string("; their dX at 16 lanes, 5x5 kernels, no padding: ") +
                                               k.conv_pool_dx_winograd_name
                                         : std::string()) +
                                    (k.conv_pool_sparse_name
                                         ? std::string("; backward at 16 lanes, kernel rows of 17 to 32 floats across "
                                                       "the input channels (up to 5 rows) or 2x2 kernels from 32 "
                                                       "input channels, dX without padding: ") +
                                               k.conv_pool_sparse_name
                                         : std::string());
    ops["linear_forward"] = k.gemm_nn_name;
    ops["linear_backward"] = std::string(k.gemm_nn_name) + " (dX and dW)";
    for (const char* op : {"maxpool2d", "avgpool2d", "bias", "relu", "tanh", "softmax_cross_entropy", "sgd", "adam"})
        ops[op] = op + std::string("__") + isa;
    py::dict info;
    info["isa"] = isa;
    info["source"] = isa_source();
    info["available"] = available_isas();
    info["cpu_features"] = cpu_features().names;
    info["threads"] = ThreadPool::instance().threads();
    info["ops"] = ops;
    const Int8Table& q = int8_kernels();
    info["int8"] = py::dict(py::arg("isa") = q.isa, py::arg("available") = int8_isas(),
                            py::arg("conv") = q.conv_name, py::arg("dense") = q.dense_name);
    info["bf16"] = py::dict(py::arg("isa") = bf16_kernels().isa, py::arg("available") = bf16_isas());
    return info;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "lenet's C++ kernels: ops over batches in the lanes layout [nblk][C][H][W][L]";
    using pair = std::pair<int, int>;
    m.def("conv2d_forward", &conv2d_forward, py::arg("x"), py::arg("weight"), py::arg("bias"),
          py::arg("stride") = pair{1, 1}, py::arg("padding") = pair{0, 0}, py::arg("algo") = "auto");
    m.def("conv_pool_forward", &conv_pool_forward, py::arg("x"), py::arg("weight"), py::arg("bias"),
          py::arg("padding") = pair{0, 0}, py::arg("relu") = false);
    m.def("conv_pool_backward", &conv_pool_backward, py::arg("x"), py::arg("weight"), py::arg("argmax"),
          py::arg("grad_output"), py::arg("grad_weight"), py::arg("grad_bias"), py::arg("padding") = pair{0, 0},
          py::arg("need_dx") = true);
    m.def("conv2d_backward", &conv2d_backward, py::arg("x"), py::arg("weight"), py::arg("grad_output"),
          py::arg("grad_weight"), py::arg("grad_bias"), py::arg("stride") = pair{1, 1},
          py::arg("padding") = pair{0, 0}, py::arg("need_dx") = true, py::arg("algo") = "auto");
    m.def("pool2d_forward", &pool2d_forward, py::arg("kind"), py::arg("x"), py::arg("kernel"), py::arg("stride"),
          py::arg("relu") = false);
    m.def("pool2d_backward", &pool2d_backward, py::arg("kind"), py::arg("x"), py::arg("output"),
          py::arg("grad_output"), py::arg("kernel"), py::arg("stride"), py::arg("relu") = false);
    m.def("linear_forward", &linear_forward, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("relu") = false);
    m.def("linear_backward", &linear_backward, py::arg("x"), py::arg("weight"), py::arg("grad_output"),
          py::arg("grad_weight"), py::arg("grad_bias"), py::arg("need_dx") = true, py::arg("output") = py::none());
    m.def("activation_forward", &activation_forward, py::arg("kind"), py::arg("x"));
    m.def("activation_backward", &activation_backward, py::arg("kind"), py::arg("output"), py::arg("grad_output"));
    m.def("softmax_xent", &softmax_xent, py::arg("logits"), py::arg("labels"), py::arg("scale"));
    m.def("sgd_update", &sgd_update, py::arg("param"), py::arg("grad"), py::arg("momentum_buffer"), py::arg("lr"),
          py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"));
    m.def("adam_update", &adam_update, py::arg("param"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("step"));
    m.def("apply_update", [](py::handle update) {
        const ops::Update u = checked_update(update);
        KernelCall call;
        ops::apply_update(u);
    }, py::arg("update"), "Apply an optimiser update (Optimizer.next_update()) to all its parameters.");
    m.def("pack_images", &pack_images, py::arg("images"), py::arg("indices"), py::arg("lanes"));
    m.def("gemm_nn", &gemm_nn, py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("ks") = py::none());
    m.def("gemm_nt", &gemm_nt, py::arg("a"), py::arg("b"));
    m.def("pool_phases_trace", &pool_phases_trace, py::arg("n0"), py::arg("n1"), py::arg("spin"));
    m.def("dense_gather", &dense_gather, py::arg("x"), py::arg("dy"), py::arg("col0"), py::arg("batch"),
          py::arg("stream") = false);
    py::register_exception<model::ModelFileError>(m, "ModelFileError", PyExc_ValueError);
    m.def("read_model_file", &read_model_file, py::arg("path"));
    m.def("write_model_file", &write_model_file, py::arg("path"), py::arg("header"), py::arg("tensors"));
    m.def("analyse_graph", [](const std::string& graph_json) {
        const model::Analysis a = model::analyse(model::graph_from_json(json::parse(graph_json)));
        return py::make_tuple(a.param_shapes, a.classes);
    }, py::arg("graph"));
    py::class_<PyNetwork>(m, "Network")
        .def(py::init<const std::string&, py::list>(), py::arg("graph"), py::arg("params"))
        .def_property_readonly("classes", &PyNetwork::classes)
        .def("logits", &PyNetwork::logits, py::arg("images"))
        .def("flat_batch", &PyNetwork::flat, py::arg("images"));
    py::class_<PyQNetwork>(m, "QNetwork")
        .def(py::init<const std::string&, py::list>(), py::arg("header"), py::arg("tensors"))
        .def_property_readonly("classes", &PyQNetwork::classes)
        .def("logits", &PyQNetwork::logits, py::arg("images"));
    bind_int8_kernels(m);
    bind_bf16_kernels(m);
    py::class_<PyTrainStep>(m, "TrainStep")
        .def(py::init<const std::string&, py::list, py::list, const std::string&>(), py::arg("graph"),
             py::arg("params"), py::arg("grads"), py::arg("precision") = "fp32",
             "precision 'bf16': the dense layers' products and the later fused convolutions' gradients with "
             "operands rounded to bf16 and fp32 sums (AMX or AVX512-BF16 where the CPU has them, else the reference "
             "loops); 'fp32': the fp32 kernels throughout.")
        .def_property_readonly("classes", &PyTrainStep::classes)
        .def("bf16_conv_layers", &PyTrainStep::bf16_conv_layers,
             "The plan's layers whose fused conv-pool backward ran in bf16 in the last step (empty before one, and "
             "in fp32).")
        .def("check_update", &PyTrainStep::check_update, py::arg("update"),
             "Raise ValueError unless the update's buffers hold exactly this step's trainable parameters.")
        .def("run", &PyTrainStep::run, py::arg("x"), py::arg("labels"), py::arg("scale"), py::arg("update") = py::none())
        .def("run_images", &PyTrainStep::run_images, py::arg("images"), py::arg("indices"), py::arg("labels"),
             py::arg("scale"), py::arg("update") = py::none())
        .def("run_image_batches", &PyTrainStep::run_image_batches, py::arg("images"), py::arg("indices"),
             py::arg("labels"), py::arg("scale"), py::arg("update"), py::arg("lrs"));
    m.def("kernel_info", &kernel_info);
    m.def("kernel_seconds", [] { return double(g_kernel_ns.load()) * 1e-9; },
          "Wall seconds spent inside op calls (GIL released) since import.");
    m.def("fma_peak_gflops", [](double seconds) {
        if (!(seconds > 0 && seconds < 60)) throw py::value_error("seconds must be in (0, 60)");
        EngineLock engine;
        return ops::fma_peak_gflops(seconds);
    }, py::arg("seconds") = 0.2,
          "Measured peak of the active instruction set on all threads: a loop of independent FMAs.");
    m.def("core_round_trip_ns", [](int trips) {
        if (trips < 1 || trips > 1000000) throw py::value_error("trips must be in [1, 1000000]");
        py::gil_scoped_release release;
        return core_round_trip_ns(trips);
    }, py::arg("trips") = 2000,
          "Round trip of one cache line between two threads, in ns (median of 5 batches of `trips`); NaN when a "
          "second thread could not run alongside.");
    m.def("available_isas", &available_isas);
    m.def("set_isa", [](const std::string& name) {
        try {
            EngineLock engine;
            set_isa(name);
        } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
        }
    });
    m.def("set_num_threads", [](int n) {
        if (n < 1 || n > ThreadPool::kMaxThreads)
            throw py::value_error("threads must be in [1, " + std::to_string(ThreadPool::kMaxThreads) + "], got " +
                                  std::to_string(n));
        EngineLock engine;
        ThreadPool::instance().set_threads(n);
    });
    m.def("get_num_threads", [] { return ThreadPool::instance().threads(); });
}
