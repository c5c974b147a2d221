// int8 inference microkernels: uint8 activations x int8 weights -> int32 sums, requantised to uint8 codes (or to
// float for the logits), one table per instruction set like KernelTable. The plain loops (int8_ref.cpp) are the
// reference and the fallback; the SIMD tables (int8_kernels.h over a small vector type) must give exactly the same
// bytes: the sums are exact int32 and the requantisation is the same sequence of float operations everywhere.
//
// Quantisation (lenet/quantize.py): a real activation a is stored as the code q = round(a / s) + z in [0, 255]
// (per tensor scale s, zero point z); a weight of output channel m as round(w / s_w[m]) in [-127, 127]. The zero
// points of the input are folded into the bias by the caller (bias -= z_in * sum of the row's weights), so the
// kernels see plain u8 x s8 dot products.
//
// Like kernels.h, this header is included by ISA-specific translation units: no inline functions with external
// linkage, no C++ standard library headers.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace lenet {

// Requantisation of output channel m, from the int32 sum `acc` of the dot product:
//   uint8:  q = round(clamp(float(acc + bias[m]) * mult[m], lo - zero, 255 - zero)) + zero
//   float:  y = float(acc + bias[m]) * mult[m]
// (round half to even; lo = zero fuses a ReLU, lo = 0 keeps every code). mult[m] = s_in * s_w[m] / s_out for
// uint8 output, s_in * s_w[m] for float output.
struct QRequant {
    const int32_t* bias;   // [M] bias at scale s_in * s_w[m], input zero point folded in
    const int32_t* wsum;   // [M] sum of row m's weights: kernels that compute with (q - 128) as int8 (NEON sdot)
                           //      add 128 * wsum[m] back
    const float* mult;     // [M]
    int zero, lo;          // output zero point and lowest code (uint8 output only)
};

// Convolution of one sample, vectorised along the output pixels. The input comes as groups of 4 bytes:
//   xq[c][g][y][ox] = xpad[c][y][ox*sw + 4g + 0..3]     (a uint32 each; xpad: the input padded with its zero point)
// so that a kernel row's taps 4g..4g+3 of consecutive output pixels are one contiguous load; w holds the weights
// in the same groups, zero past kw:
//   w[m][c][ky][g][0..3] = weight[m][c][ky][4g + 0..3]
//   y[m][oy][ox] = requant(sum over c, ky, g of dot4(xq[c][g][oy*sh + ky][ox], w[m][c][ky][g]))
// with xq[c][g][y][ox] at uint32 offset ((c*groups + g)*hp + y)*ld + ox, ox < ow: ow may exceed ld. At stride 1
// with ld equal to the real output width W the whole output is one row of oh*W pixels (oh = 1, ow = oh*W): the
// vectors then run across output rows and lose no lanes at their ends.
// A kernel may read whole vectors past a row's last pixel: up to 32 uint32 after the end of every row it reads.
struct QConvArgs {
    int ic, kh, groups;    // input channels, kernel rows, groups of 4 kernel columns (ceil(kw / 4))
    int oc, oh, ow, sh;    // output channels, height, width; vertical stride
    int hp;                // rows of xq per (input channel, group): the padded input height
    ptrdiff_t ld;          // uint32 per xq row
    const uint8_t* xq;     // [ic][groups][hp][ld] x 4 bytes
    const int8_t* w;       // [oc][ic][kh][groups][4]
    QRequant rq;
    uint8_t* y;            // [oc][oh][ow]
};

// Dense layer of one sample, vectorised along the outputs:
//   y[m] = requant(sum over k4 of dot4(x[4*k4 + 0..3], w[k4][m][0..3]))
struct QDenseArgs {
    int k4, m, mpad;       // groups of 4 inputs (inputs past the real count have zero weights); outputs; the
                           // packed row length, a multiple of 16 (a kernel may load whole vectors)
    const uint8_t* x;      // [k4 * 4]
    const int8_t* w;       // [k4][mpad][4]
    QRequant rq;
    uint8_t* y;            // [m] codes, or null: then
    float* yf;             // [m] floats
};

struct Int8Table {
    const char* isa;       // "reference", "avx2", "avx_vnni", "avx512_vnni", "neon_dot"
    int vector_ints;       // int32 lanes per vector (1 for the reference)
    void (*conv)(const QConvArgs* a);
    void (*dense)(const QDenseArgs* a);
    // The regrouping of QConvArgs::xq for one row at stride 1: dst[ox] = src[ox + 0..3] for ox < n (4 bytes each).
    // May write whole vectors past dst[n - 1] (up to n rounded up to 16 groups) and read up to 64 bytes past
    // src[n + 2].
    void (*regroup)(const uint8_t* src, int n, uint8_t* dst);
    const char* conv_name;
    const char* dense_name;
};

extern const Int8Table kInt8Reference;
const Int8Table* int8_table_avx2();         // null unless built for x86-64
const Int8Table* int8_table_avx_vnni();     // null unless built for x86-64 with a compiler that has -mavxvnni
const Int8Table* int8_table_avx512_vnni();  // null unless built for x86-64
const Int8Table* int8_table_neon_dot();     // null unless built for aarch64

}  // namespace lenet
