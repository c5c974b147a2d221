// Samples into the lanes layout: the input of a block.
#include <stdint.h>

#include <algorithm>
#include <vector>

#include "block.h"

namespace lenet::ops::block {

namespace {

const float* pixel_scale() {  // pixel_value (kernels.h) of every byte
    static const auto lut = [] {
        std::vector<float> t(256);
        for (int v = 0; v < 256; ++v) t[size_t(v)] = pixel_value(uint8_t(v));
        return t;
    }();
    return lut.data();
}

// out [F][L] is written one pixel at a time, the L samples' values of that pixel side by side: every store goes to the
// line being filled, and the L samples are read as L sequential streams. Their lines are requested first, all at
// once: the samples of a batch are random rows of a data set far larger than the caches, and read one after the
// other each would wait for memory in turn (on the Intel VM that wait was most of the gather).
template <class T, class Value>
void pack_samples(int n, size_t F, int L, const T* x, const int64_t* rows, Value value, float* out) {
    constexpr int kGroup = 64;  // lanes gathered side by side (a block has 16; lanes 1 is one sample)
    for (int l0 = 0; l0 < n; l0 += kGroup) {
        const int count = std::min(kGroup, n - l0);
        const T* src[kGroup];
        for (int l = 0; l < count; ++l) {
            src[l] = x + size_t(rows ? rows[l0 + l] : l0 + l) * F;
            const char* bytes = reinterpret_cast<const char*>(src[l]);
            for (size_t b = 0; b < F * sizeof(T); b += 64) __builtin_prefetch(bytes + b);
        }
        float* dst = out + l0;
        for (size_t f = 0; f < F; ++f, dst += L)
            for (int l = 0; l < count; ++l) dst[l] = value(src[l][f]);
    }
    if (n < L)
        for (size_t f = 0; f < F; ++f) std::fill(out + f * size_t(L) + n, out + (f + 1) * size_t(L), 0.0f);
}

}  // namespace

void pack(const KernelTable&, int n, size_t F, int L, const float* x, const int64_t* rows, float* out) {
    pack_samples(n, F, L, x, rows, [](float v) { return v; }, out);
}
void pack(const KernelTable& k, int n, size_t F, int L, const uint8_t* x, const int64_t* rows, float* out) {
    if (n == 16 && L == 16) {  // a whole block: the kernels' (the same values)
        const uint8_t* src[16];
        for (int l = 0; l < 16; ++l) {
            src[l] = x + size_t(rows ? rows[l] : l) * F;
            for (size_t b = 0; b < F; b += 64) __builtin_prefetch(src[l] + b);
        }
        return k.pack_u8_16(F, src, out);
    }
    const float* scale = pixel_scale();
    pack_samples(n, F, L, x, rows, [scale](uint8_t v) { return scale[v]; }, out);
}

}  // namespace lenet::ops::block
