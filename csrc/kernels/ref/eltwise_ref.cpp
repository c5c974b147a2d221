// Reference bias, activation, loss and optimiser kernels.
#include <math.h>

#include "ref.h"

namespace lenet::ref {

void bias_add(int C, ptrdiff_t P, const float* b, float* y) {
    for (int c = 0; c < C; ++c)
        for (ptrdiff_t p = 0; p < P; ++p) y[c * P + p] += b[c];
}

void bias_grad(int C, ptrdiff_t P, const float* dy, float* db) {
    for (int c = 0; c < C; ++c) {
        float acc = 0.0f;
        for (ptrdiff_t p = 0; p < P; ++p) acc += dy[c * P + p];
        db[c] += acc;
    }
}

// (stream: plain stores here, the same values)
void dense_gather(int L, int in, int out, ptrdiff_t col0, ptrdiff_t B, int P, const float* x, const float* dy,
                  float* xP, float* dyT, int /*stream*/) {
    for (int o = 0; dyT && o < out; ++o)
        for (int l = 0; l < L; ++l) dyT[o * B + col0 + l] = dy[o * L + l];
    for (int i = 0; xP && i < in; ++i)
        for (int l = 0; l < L; ++l) xP[(i - i % P) * B + (col0 + l) * P + i % P] = x[i * L + l];
}

void pack_u8_16(size_t F, const uint8_t* const* src, float* out) {
    for (size_t f = 0; f < F; ++f)
        for (int l = 0; l < 16; ++l) out[f * 16 + l] = pixel_value(src[l][f]);
}

void relu_fwd(ptrdiff_t n, const float* x, float* y) {
    for (ptrdiff_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
void relu_bwd(ptrdiff_t n, const float* y, const float* dy, float* dx) {
    for (ptrdiff_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
void tanh_fwd(ptrdiff_t n, const float* x, float* y) {
    for (ptrdiff_t i = 0; i < n; ++i) y[i] = tanhf(x[i]);
}
void tanh_bwd(ptrdiff_t n, const float* y, const float* dy, float* dx) {
    for (ptrdiff_t i = 0; i < n; ++i) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

// logits [K][L]; one lane is one sample.
void softmax_xent(int K, int L, const float* logits, const int32_t* label, float scale, float* loss,
                  float* dlogits) {
    for (int l = 0; l < L; ++l) {
        if (label[l] < 0) {
            loss[l] = 0.0f;
            for (int k = 0; k < K; ++k) dlogits[k * L + l] = 0.0f;
            continue;
        }
        float mx = logits[l];
        for (int k = 1; k < K; ++k) mx = fmaxf(mx, logits[k * L + l]);
        float sum = 0.0f;
        for (int k = 0; k < K; ++k) sum += expf(logits[k * L + l] - mx);
        loss[l] = logf(sum) + mx - logits[label[l] * L + l];
        for (int k = 0; k < K; ++k)
            dlogits[k * L + l] = (expf(logits[k * L + l] - mx) / sum - (k == label[l] ? 1.0f : 0.0f)) * scale;
    }
}

// (stream: plain stores here, the same values)
void sgd_update(ptrdiff_t n, float* w, const float* g, float* v, float lr, float momentum, float wd, int nesterov,
                int /*stream*/) {
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float gi = g[i] + wd * w[i];
        v[i] = momentum * v[i] + gi;
        w[i] -= lr * (nesterov ? gi + momentum * v[i] : v[i]);
    }
}

void adam_update(ptrdiff_t n, float* w, const float* g, float* m, float* v, float lr, float b1, float b2, float eps,
                 float wd, int step, int /*stream*/) {
    const float bc1 = 1.0f - powf(b1, float(step)), bc2 = 1.0f - powf(b2, float(step));
    const float step_size = lr / bc1, inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float gi = g[i] + wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
    }
}

double fma_loop(int64_t iters, float* sink) {
    float acc[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (int64_t i = 0; i < iters; ++i)
        for (float& a : acc) a = a * 0.9999999f + 1e-7f;
    float sum = 0;
    for (float a : acc) sum += a;
    *sink = sum;
    return double(iters) * 8 * 2;
}

}  // namespace lenet::ref
