// Reference GEMMs: the three-loop definitions.
#include "ref.h"

namespace lenet::ref {

// C[M][N] (+)= A[M][K] * B[K][N], A read with row stride rsa and column stride csa; over k = ks[0..K) when ks.
void gemm_nn(int M, int N, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa, const float* B, ptrdiff_t ldb,
             float* C, ptrdiff_t ldc, int accumulate, const int* ks) {
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            float acc = accumulate ? C[m * ldc + n] : 0.0f;
            for (int kk = 0; kk < K; ++kk) {
                const ptrdiff_t k = ks ? ks[kk] : kk;
                acc += A[m * rsa + k * csa] * B[k * ldb + n];
            }
            C[m * ldc + n] = acc;
        }
}

// C[M][N] (+)= sum_k A[m][k] * B[n][k].
void gemm_nt(int M, int N, int K, const float* A, ptrdiff_t lda, const float* B, ptrdiff_t ldb, float* C,
             ptrdiff_t ldc, int accumulate) {
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            float acc = 0.0f;
            for (int k = 0; k < K; ++k) acc += A[m * lda + k] * B[n * ldb + k];
            C[m * ldc + n] = accumulate ? C[m * ldc + n] + acc : acc;
        }
}

}  // namespace lenet::ref
