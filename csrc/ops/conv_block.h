// One block of a convolution (16 or L samples), shared by the whole-batch ops (conv.cpp) and the captured
// training step (train_step.cpp). Scratch slots 0 and 1 of `thread` are used.
#pragma once
#include <stddef.h>

#include "../kernels/kernels.h"

namespace lenet::ops::block {

size_t floats(int c, int h, int w, int L);  // one block of a [c][h][w][L] activation

// y = conv(x, w) + b. `direct`: the shape-specialised kernels (16 lanes, stride 1), else im2col + GEMM.
void conv_forward(const KernelTable& k, const ConvShape& s, bool direct, const float* x, const float* w,
                  const float* b, float* y, int thread);
// dw [oc][ic][kh][kw] and db [oc] overwritten with this block's gradient (db may be null); dx overwritten
// (may be null). wt: the flipped, transposed weights (flip_transpose), needed when direct and dx.
void conv_backward(const KernelTable& k, const ConvShape& s, bool direct, const float* x, const float* w,
                   const float* wt, const float* dy, float* dw, float* db, float* dx, int thread);
// wt [ic][oc][kh][kw] = w [oc][ic][kh-1-ky][kw-1-kx]: the weights of dX as a convolution of padded dY.
void flip_transpose(const ConvShape& s, const float* w, float* wt);

}  // namespace lenet::ops::block
