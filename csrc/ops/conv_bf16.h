// A convolution's weight gradient in bf16 (TrainStep's Precision::Bf16), one block of 16 lanes, stride 1 (block.h's
// layouts): dw [oc][ic][kh][kw] = the sum over pixels and lanes of dy * x, computed as dw^T = X_col . dy^T with
// X_col [ic kh kw][pixels x lanes] (im2col of the padded input, rounded to bf16) and dy^T in pairs (bf16.h), the
// products summed in fp32. xpad [ic][oh+kh-1][ow+kw-1][L]; dy [oc][oh][ow][L] read inside a border of bh rows and bw
// columns, as kernels.h's conv_direct_dw reads it. Scratch slots kConvBf16SlotA and kConvBf16SlotB of `thread`.
#pragma once
#include "../kernels/bf16/bf16.h"
#include "../kernels/kernels.h"

namespace lenet::ops {

constexpr int kConvBf16SlotA = 10, kConvBf16SlotB = 11;

void conv_dw_bf16(const Bf16Table& t, const ConvShape& s, const float* xpad, const float* dy, int bh, int bw,
                  float* dw, int thread);

}  // namespace lenet::ops
