// The plain loops of bf16.h: the reference and the fallback.
#include <string.h>

#include "bf16.h"

namespace lenet {

namespace {

// fp32 -> bf16: round to nearest even; denormals to a signed zero; NaN stays a quiet NaN (vcvtneps2bf16's rules).
uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) return uint16_t((u >> 16) & 0x8000u);                // zero or denormal
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);        // NaN
    return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);                           // overflow rounds to inf
}

float from_bf16(uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// (stream: plain stores here, the same bytes)
void convert_ref(int rows, int cols, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldd,
                 int /*stream*/) {
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) dst[r * ldd + c] = to_bf16(src[r * rs + c * cs]);
}

void pairs_ref(int K, int N, const float* src, ptrdiff_t rs, ptrdiff_t cs, uint16_t* dst, ptrdiff_t ldb,
               int /*stream*/) {
    for (int k = 0; k < K + (K & 1); ++k)
        for (int n = 0; n < N; ++n)
            dst[((k / 2) * ldb + n) * 2 + k % 2] = k < K ? to_bf16(src[k * rs + n * cs]) : 0;
}

void gemm_ref(int M, int N, int K, const uint16_t* A, ptrdiff_t lda, const uint16_t* B, ptrdiff_t ldb, float* C,
              ptrdiff_t ldc, int transpose_c, const int* kp, int np) {
    if (np < 0) kp = nullptr, np = K / 2;
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            float acc = 0.0f;
            for (int q = 0; q < np; ++q)
                for (int k = 2 * (kp ? kp[q] : q), e = k + 2; k < e; ++k)
                    acc += from_bf16(A[m * lda + k]) * from_bf16(B[((k / 2) * ldb + n) * 2 + k % 2]);
            (transpose_c ? C[n * ldc + m] : C[m * ldc + n]) = acc;
        }
}

}  // namespace

const Bf16Table kBf16Reference = {"reference", convert_ref, pairs_ref, gemm_ref, false};

}  // namespace lenet
