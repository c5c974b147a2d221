#include "qnetwork.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "../core/aligned.h"
#include "../core/threadpool.h"
#include "../kernels/int8/int8_dispatch.h"

namespace lenet::model {

struct QNetwork::Stage {
    enum class Op { Conv, Dense, MaxPool, AvgPool, Relu, Tanh } op = Op::Relu;
    ConvShape s{};                    // conv / pool: geometry of one sample; dense: ic = inputs, oc = outputs
    int groups = 0, hp = 0, wp = 0;   // conv: 4-byte groups per kernel row; padded input height, row bytes
    int k4 = 0, mpad = 0;             // dense: input groups, packed row length
    LineVector<int8_t> w;             // packed as QConvArgs::w / QDenseArgs::w (on lines: the kernels load whole ones)
    LineVector<int32_t> bias, wsum;
    LineVector<float> mult;
    int zero_in = 0, zero_out = 0, lo = 0;  // lo: lowest output code (a fused ReLU); relu / pooling use lo only
    std::vector<uint8_t> table;       // tanh: the output code of each input code
    bool float_out = false;           // the last layer: float logits
    size_t out_size = 0;              // output bytes of one sample
};

namespace {

[[noreturn]] void bad(const std::string& why) { throw ModelFileError("quantized model: " + why); }

constexpr size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

const Tensor& find_tensor(const ModelFile& f, const std::string& name, const char* dtype,
                          const std::vector<int64_t>& shape) {
    for (const Tensor& t : f.tensors)
        if (t.name == name) {
            if (t.dtype != dtype || t.shape != shape) {
                std::string want;
                for (int64_t d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
                bad("tensor \"" + name + "\" should be " + dtype + " (" + want + "), is " + t.dtype);
            }
            return t;
        }
    bad("tensor \"" + name + "\" is missing");
}

struct QParam {
    float scale = 1;
    int zero = 0;
};
constexpr QParam kTanhOut{1.0f / 128.0f, 128};  // every tanh's output: codes 0..255 for [-1, 127/128]

// Pooling without padding on codes: the max of each window (quantisation is monotonic), or its mean rounded half up
// (the mean of the codes is the code of the mean: same scale and zero point); then at least lo (a fused ReLU).
template <bool MAX>
void pool_codes(const ConvShape& s, const uint8_t* x, int lo, uint8_t* y) {
    const int n = s.kh * s.kw;
    for (int c = 0; c < s.ic; ++c)
        for (int oy = 0; oy < s.oh; ++oy)
            for (int ox = 0; ox < s.ow; ++ox) {
                int acc = MAX ? lo : n / 2;
                for (int ky = 0; ky < s.kh; ++ky) {
                    const uint8_t* row = x + (size_t(c) * s.ih + oy * s.sh + ky) * s.iw + ox * s.sw;
                    for (int kx = 0; kx < s.kw; ++kx) acc = MAX ? std::max(acc, int(row[kx])) : acc + row[kx];
                }
                y[(size_t(c) * s.oh + oy) * s.ow + ox] = uint8_t(MAX ? acc : std::max(acc / n, lo));
            }
}

QParam qparam(const json::Value& v, const std::string& what) {
    QParam q;
    q.scale = float(v.at("scale", what).as_number(what + " scale"));
    q.zero = v.at("zero_point", what).as_int(what + " zero_point");
    if (!(q.scale > 0) || !std::isfinite(q.scale)) bad(what + ": the scale must be a positive number");
    if (q.zero < 0 || q.zero > 255) bad(what + ": the zero point must be in [0, 255]");
    return q;
}

}  // namespace

bool is_quantized(const ModelFile& file) {
    const json::Value* meta = file.header.find("metadata");
    return meta && meta->is(json::Value::Type::Object) && meta->find("quantization");
}

std::unique_ptr<QNetwork> make_qnetwork(const ModelFile& file) { return std::make_unique<QNetwork>(file); }

QNetwork::~QNetwork() = default;

QNetwork::QNetwork(const ModelFile& file) {
    try {
        graph_ = graph_from_json(file.header.at("graph", "header"));
        const Analysis an = analyse(graph_);
        classes_ = an.classes;
        sample_size_ = an.input_floats_per_sample;
        if (!is_quantized(file)) bad("the metadata has no \"quantization\" entry");
        const json::Value& q = *file.header.at("metadata", "header").find("quantization");
        if (q.at("scheme", "quantization").as_string("quantization scheme") != "int8")
            bad("unknown quantization scheme \"" + q.at("scheme", "quantization").as_string("") + "\"");
        const QParam in = qparam(q.at("input", "quantization"), "quantization input");
        if (in.zero != 0 || in.scale != 1.0f / 255.0f) bad("the input must be pixels: scale 1/255, zero point 0");
        const auto& outputs = q.at("outputs", "quantization").as_array("quantization outputs");
        size_t ncompute = 0;
        for (const Layer& l : graph_.layers) ncompute += l.kind == Kind::Conv2d || l.kind == Kind::Linear;
        if (outputs.size() + 1 != ncompute)
            bad("quantization outputs has " + std::to_string(outputs.size()) + " entries for " +
                std::to_string(ncompute) + " conv2d / linear layers (one per layer but the last)");

        QParam cur = in;
        size_t p = 0, j = 0, cur_size = sample_size_;
        act_bytes_ = sample_size_;
        const auto& L = graph_.layers;
        for (size_t i = 0; i < L.size(); ++i) {
            const Layer& l = L[i];
            const bool relu_next = i + 1 < L.size() && L[i + 1].kind == Kind::Relu;
            const std::string where = "layer " + std::to_string(i);
            Stage st;
            st.s = an.shapes[i];
            if (l.kind == Kind::Conv2d || l.kind == Kind::Linear) {
                const bool conv = l.kind == Kind::Conv2d, last = j + 1 == ncompute;
                const int M = l.out;
                const std::vector<int64_t> wshape(an.param_shapes[p].begin(), an.param_shapes[p].end());
                const Tensor& wt = find_tensor(file, "param." + std::to_string(p), "int8", wshape);
                const std::string scale_name = "param." + std::to_string(p) + ".scale";
                const Tensor& sc = find_tensor(file, scale_name, "float32", {M});
                ++p;
                const Tensor* bt = nullptr;
                if (l.bias) bt = &find_tensor(file, "param." + std::to_string(p++), "int32", {M});
                const QParam out = last ? QParam{} : qparam(outputs[j], "quantization outputs[" + std::to_string(j) + "]");
                ++j;
                const auto* w8 = reinterpret_cast<const int8_t*>(wt.data.data());
                const size_t K = wt.elements() / size_t(M);  // weights per output channel
                st.op = conv ? Stage::Op::Conv : Stage::Op::Dense;
                st.zero_in = cur.zero;
                st.zero_out = out.zero;
                st.lo = relu_next ? out.zero : 0;
                st.float_out = last;
                st.bias.resize(size_t(M));
                st.wsum.resize(size_t(M));
                st.mult.resize(size_t(M));
                for (int m = 0; m < M; ++m) {
                    float sw;
                    std::memcpy(&sw, sc.data.data() + 4 * size_t(m), 4);
                    if (!(sw > 0) || !std::isfinite(sw)) bad("tensor \"" + scale_name + "\": weight scales must be positive numbers");
                    int32_t sum = 0, b = 0;
                    for (size_t k = 0; k < K; ++k) sum += w8[size_t(m) * K + k];
                    if (bt) std::memcpy(&b, bt->data.data() + 4 * size_t(m), 4);
                    st.wsum[size_t(m)] = sum;
                    st.bias[size_t(m)] = b - cur.zero * sum;  // sum w (q - z) = sum w q - z sum w
                    st.mult[size_t(m)] = last ? float(double(cur.scale) * sw) : float(double(cur.scale) * sw / out.scale);
                }
                if (conv) {
                    ConvShape& s = st.s;
                    const int G = (s.kw + 3) / 4;
                    st.groups = G;
                    st.hp = s.ih + 2 * s.ph;
                    st.wp = std::max(s.iw + 2 * s.pw, (s.ow - 1) * s.sw + 4 * G);
                    st.w.assign(size_t(M) * s.ic * s.kh * G * 4, 0);
                    for (int m = 0; m < M; ++m)
                        for (int c = 0; c < s.ic; ++c)
                            for (int ky = 0; ky < s.kh; ++ky)
                                for (int kx = 0; kx < s.kw; ++kx)
                                    st.w[((size_t(m * s.ic + c) * s.kh + ky) * G) * 4 + size_t(kx)] =
                                        w8[((size_t(m) * s.ic + c) * s.kh + ky) * s.kw + kx];
                    pad_bytes_ = std::max(pad_bytes_, size_t(s.ic) * st.hp * st.wp);
                    xq_bytes_ = std::max(xq_bytes_, size_t(s.ic) * G * st.hp * size_t(s.ow) * 4);
                    st.out_size = size_t(M) * s.oh * s.ow;
                } else {
                    st.k4 = int((K + 3) / 4);
                    st.mpad = int(round_up(size_t(M), 16));
                    st.w.assign(size_t(st.k4) * st.mpad * 4, 0);
                    for (int m = 0; m < M; ++m)
                        for (size_t k = 0; k < K; ++k)
                            st.w[((k / 4) * size_t(st.mpad) + size_t(m)) * 4 + k % 4] = w8[size_t(m) * K + k];
                    st.out_size = size_t(M);
                }
                if (relu_next) ++i;
                cur = out;
            } else if (l.kind == Kind::MaxPool || l.kind == Kind::AvgPool) {
                st.op = l.kind == Kind::MaxPool ? Stage::Op::MaxPool : Stage::Op::AvgPool;
                st.lo = relu_next ? cur.zero : 0;
                st.out_size = size_t(st.s.oc) * st.s.oh * st.s.ow;
                if (relu_next) ++i;
            } else if (l.kind == Kind::Relu) {
                st.op = Stage::Op::Relu;
                st.lo = cur.zero;
                st.out_size = cur_size;
            } else if (l.kind == Kind::Tanh) {  // the code of tanh(scale (q - zero)) for each input code q
                st.op = Stage::Op::Tanh;
                st.table.resize(256);
                for (int q = 0; q < 256; ++q) {
                    const double v = std::tanh(double(cur.scale) * (q - cur.zero)) / double(kTanhOut.scale);
                    st.table[size_t(q)] = uint8_t(std::clamp(int(std::nearbyint(v)) + kTanhOut.zero, 0, 255));
                }
                st.out_size = cur_size;
                cur = kTanhOut;
            } else {  // Kind::Flatten: the codes stay as they are
                continue;
            }
            cur_size = st.out_size;
            act_bytes_ = std::max(act_bytes_, st.out_size);
            stages_.push_back(std::move(st));
        }
        act_bytes_ = round_up(act_bytes_, 64) + 64;  // dense kernels read their input in groups of 4
        pad_bytes_ = round_up(pad_bytes_, 64) + 64;  // regroup reads past the last row
        xq_bytes_ = round_up(xq_bytes_, 64) + 256;  // kernels read, regroup writes, whole vectors past the end
    } catch (const std::invalid_argument& e) {
        bad(e.what());
    }
}

void QNetwork::run_one(const uint8_t* codes, float* logits, unsigned char* work) const {
    const Int8Table& k = int8_kernels();
    uint8_t* act[2] = {work, work + act_bytes_};
    uint8_t* xpad = work + 2 * act_bytes_;
    uint8_t* xq = xpad + pad_bytes_;
    const uint8_t* x = codes;
    int next = 0;  // act[next] receives the next output
    for (const Stage& st : stages_) {
        const ConvShape& s = st.s;
        uint8_t* y = act[next];
        switch (st.op) {
            case Stage::Op::Conv: {
                // Zero-point padding, then rows regrouped into 4-byte groups (QConvArgs::xq, rows of ow groups).
                const int G = st.groups;
                std::memset(xpad, st.zero_in, size_t(s.ic) * st.hp * st.wp);
                for (int c = 0; c < s.ic; ++c)
                    for (int yy = 0; yy < s.ih; ++yy)
                        std::memcpy(xpad + (size_t(c) * st.hp + yy + s.ph) * st.wp + s.pw, x + (size_t(c) * s.ih + yy) * s.iw,
                                    size_t(s.iw));
                // In order (regroup writes whole vectors: the spill past a row is overwritten by the next one).
                for (int c = 0; c < s.ic; ++c)
                    for (int g = 0; g < G; ++g)
                        for (int yy = 0; yy < st.hp; ++yy) {
                            uint8_t* dst = xq + ((size_t(c) * G + g) * st.hp + yy) * size_t(s.ow) * 4;
                            const uint8_t* src = xpad + (size_t(c) * st.hp + yy) * st.wp + 4 * g;
                            if (s.sw == 1) k.regroup(src, s.ow, dst);
                            else for (int ox = 0; ox < s.ow; ++ox) std::memcpy(dst + 4 * ox, src + ox * s.sw, 4);
                        }
                // At stride 1 the output is one row of oh*ow pixels (QConvArgs): no partial vector per row.
                const bool flat = s.sh == 1;
                QConvArgs a{s.ic, s.kh, G, s.oc, flat ? 1 : s.oh, flat ? s.oh * s.ow : s.ow, s.sh, st.hp, s.ow, xq,
                            st.w.data(), {st.bias.data(), st.wsum.data(), st.mult.data(), st.zero_out, st.lo}, y};
                k.conv(&a);
                break;
            }
            case Stage::Op::Dense: {
                QDenseArgs a{st.k4, s.oc, st.mpad, x, st.w.data(),
                             {st.bias.data(), st.wsum.data(), st.mult.data(), st.zero_out, st.lo},
                             st.float_out ? nullptr : y, st.float_out ? logits : nullptr};
                k.dense(&a);
                break;
            }
            case Stage::Op::MaxPool: {
                const uint8_t lo = uint8_t(st.lo);
                if (s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2) {  // the common case, in a loop that vectorises
                    for (int c = 0; c < s.ic; ++c)
                        for (int oy = 0; oy < s.oh; ++oy) {
                            const uint8_t* r0 = x + (size_t(c) * s.ih + 2 * oy) * s.iw;
                            const uint8_t* r1 = r0 + s.iw;
                            uint8_t* yr = y + (size_t(c) * s.oh + oy) * s.ow;
                            for (int ox = 0; ox < s.ow; ++ox) {
                                const uint8_t a = std::max(r0[2 * ox], r0[2 * ox + 1]), b = std::max(r1[2 * ox], r1[2 * ox + 1]);
                                yr[ox] = std::max(std::max(a, b), lo);
                            }
                        }
                    break;
                }
                pool_codes<true>(s, x, st.lo, y);
                break;
            }
            case Stage::Op::AvgPool:
                pool_codes<false>(s, x, st.lo, y);
                break;
            case Stage::Op::Relu: {
                const uint8_t lo = uint8_t(st.lo);
                for (size_t i = 0; i < st.out_size; ++i) y[i] = std::max(x[i], lo);
                break;
            }
            case Stage::Op::Tanh:
                for (size_t i = 0; i < st.out_size; ++i) y[i] = st.table[x[i]];
                break;
        }
        x = y;
        next ^= 1;
    }
}

template <class T>
void QNetwork::run(int n, const T* x, float* logits) const {
    constexpr int kChunk = 8;  // samples per task
    const size_t F = sample_size_, work_bytes = 2 * act_bytes_ + pad_bytes_ + xq_bytes_ + act_bytes_;
    const int ntasks = (n + kChunk - 1) / kChunk;
    ThreadPool::instance().parallel_for(ntasks, [&](int t, int thread) {
        auto* work = reinterpret_cast<unsigned char*>(scratch(thread, 6, work_bytes / sizeof(float) + 1));
        uint8_t* codes = work + work_bytes - act_bytes_;  // the input codes, behind the stages' buffers
        for (int i = t * kChunk; i < std::min(n, (t + 1) * kChunk); ++i) {
            const T* xi = x + size_t(i) * F;
            if constexpr (std::is_same<T, uint8_t>::value) {
                std::memcpy(codes, xi, F);
            } else {
                // [0, 1] -> the nearest pixel value, ties to even (NaN -> 0). Adding and subtracting 1.5 * 2^23
                // rounds a float in [0, 255] to an integer in the default rounding mode, in a loop the compiler
                // vectorises: std::nearbyint is a library call on baseline x86-64 (1.6 us of a 7.7 us prediction).
                constexpr float kRound = 12582912.0f;
                for (size_t f = 0; f < F; ++f) {
                    float v = xi[f] * 255.0f;
                    v = v > 0 ? (v < 255 ? v : 255) : 0;
                    codes[f] = uint8_t(int((v + kRound) - kRound));
                }
            }
            run_one(codes, logits + size_t(i) * classes_, work);
        }
    });
}

void QNetwork::predict(int n, const uint8_t* x, float* logits) const { run(n, x, logits); }
void QNetwork::predict(int n, const float* x, float* logits) const { run(n, x, logits); }

}  // namespace lenet::model
