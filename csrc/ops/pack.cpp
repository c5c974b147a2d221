// Samples into the lanes layout: the input of a block.
#include <stdint.h>

#include <algorithm>
#include <vector>

#include "block.h"

namespace lenet::ops::block {

namespace {

const float* pixel_scale() {  // v / 255 exactly as float32 division, the same as numpy's astype(float32) / 255
    static const auto lut = [] {
        std::vector<float> t(256);
        for (int v = 0; v < 256; ++v) t[size_t(v)] = float(v) / 255.0f;
        return t;
    }();
    return lut.data();
}

inline float value(float v) { return v; }
inline float value(uint8_t v) { return pixel_scale()[v]; }

// out [F][L] is written a chunk of pixels at a time, every lane of the chunk before the next: the chunk's lines
// (64 pixels x 16 lanes = 4 KB) stay in L1 while the L samples fill them. (Lane by lane over all F pixels, each
// sample would touch every line of a 50 KB block: 16 passes through L2.)
template <class T>
void pack_samples(int n, size_t F, int L, const T* x, const int64_t* rows, float* out) {
    constexpr size_t kChunk = 64;
    for (size_t f0 = 0; f0 < F; f0 += kChunk) {
        const size_t f1 = std::min(F, f0 + kChunk);
        for (int l = 0; l < L; ++l) {
            float* dst = out + l;
            if (l >= n) {
                for (size_t f = f0; f < f1; ++f) dst[f * size_t(L)] = 0.0f;
                continue;
            }
            const T* src = x + size_t(rows ? rows[l] : l) * F;
            for (size_t f = f0; f < f1; ++f) dst[f * size_t(L)] = value(src[f]);
        }
    }
}

}  // namespace

void pack(int n, size_t F, int L, const float* x, const int64_t* rows, float* out) { pack_samples(n, F, L, x, rows, out); }
void pack(int n, size_t F, int L, const uint8_t* x, const int64_t* rows, float* out) { pack_samples(n, F, L, x, rows, out); }

}  // namespace lenet::ops::block
