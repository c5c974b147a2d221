// A convolution's gradients in bf16 (TrainStep's Precision::Bf16), one block of 16 lanes, stride 1 (block.h's
// layouts), operands rounded to bf16 and products summed in fp32 (bf16.h). Scratch slots kConvBf16SlotA and
// kConvBf16SlotB of `thread`.
//
// Weight gradient: dw [oc][ic][kh][kw] = the sum over pixels and lanes of dy * x, computed as dw^T = X_col . dy^T
// with X_col [ic kh kw][pixels x lanes] (im2col of the padded input) and dy^T in pairs. xpad [ic][oh+kh-1][ow+kw-1]
// [L]; dy [oc][oh][ow][L] read inside a border of bh rows and bw columns, as kernels.h's conv_direct_dw reads it.
#pragma once
#include "../kernels/bf16/bf16.h"
#include "../kernels/kernels.h"

namespace lenet::ops {

constexpr int kConvBf16SlotA = 10, kConvBf16SlotB = 11;

void conv_dw_bf16(const Bf16Table& t, const ConvShape& s, const float* xpad, const float* dy, int bh, int bw,
                  float* dw, int thread);

// Input gradient: dx [ic][ih][iw][L] = the convolution of dy_pad (dy inside the zero border that block.h's
// padded_dy_floats sizes: kh-1-ph rows, kw-1-pw columns) with the flipped weights, as dx = Wt . D_col with D_col
// [oc kh kw][ih iw L] in pairs. wt: conv_dx_weights_bf16's, from w [oc][ic][kh][kw].
size_t conv_dx_weights_bf16_count(const ConvShape& s);  // uint16 values
void conv_dx_weights_bf16(const Bf16Table& t, const ConvShape& s, const float* w, uint16_t* wt);
void conv_dx_bf16(const Bf16Table& t, const ConvShape& s, const uint16_t* wt, const float* dy_pad, float* dx,
                  int thread);

}  // namespace lenet::ops
