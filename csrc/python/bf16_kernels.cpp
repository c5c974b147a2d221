// The bf16 kernels (kernels/bf16/bf16.h) callable from Python on one named table, so that tests can hold the AMX
// table to the reference (lenet._core.bf16_isas / bf16_convert / bf16_pairs / bf16_gemm).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "../core/aligned.h"
#include "../kernels/bf16/bf16_dispatch.h"
#include "../ops/conv_bf16.h"
#include "../ops/ops.h"
#include "kernel_arrays.h"

namespace py = pybind11;
using namespace lenet;
using kernel_arrays::check;
using kernel_arrays::need;

namespace {

const Bf16Table& table(const std::string& isa) { return kernel_arrays::available(bf16_table_named(isa), "bf16", isa); }

// The bytes a packing function writes into a 64-byte aligned buffer of n uint16 first set to 0xffff (so that streamed
// stores can happen: numpy's own buffers need not be aligned), as a numpy array of `shape`.
template <class Write>
py::array_t<uint16_t> packed(std::vector<ptrdiff_t> shape, size_t n, Write&& write) {
    LineVector<uint16_t> buf(n, uint16_t(0xffff));
    write(buf.data());
    py::array_t<uint16_t> out(shape);
    std::copy(buf.begin(), buf.end(), out.mutable_data());
    return out;
}

// src [rows][cols] float32 -> bf16 bits [rows][cols]; transposed: src [cols][rows] read down its columns. stream: the
// table's cache-bypassing stores, where it has them.
py::array_t<uint16_t> bf16_convert(const std::string& isa, py::handle src_, bool transposed, bool stream) {
    auto src = need<float>(src_, "src", 2);
    const int a = int(src.shape(0)), b = int(src.shape(1)), rows = transposed ? b : a, cols = transposed ? a : b;
    return packed({rows, cols}, size_t(rows) * cols, [&](uint16_t* out) {
        table(isa).convert(rows, cols, src.data(), transposed ? 1 : cols, transposed ? rows : 1, out, cols, stream);
    });
}

// B [K][N] (src, or src [N][K] read down its columns when transposed) in pairs: [ceil(K / 2)][ldb][2] bf16 bits,
// columns past N left 0xffff (never written).
py::array_t<uint16_t> bf16_pairs(const std::string& isa, py::handle src_, bool transposed, int ldb, bool stream) {
    auto src = need<float>(src_, "src", 2);
    const int a = int(src.shape(0)), b = int(src.shape(1)), K = transposed ? b : a, N = transposed ? a : b;
    check(ldb >= N, "ldb must be at least N");
    return packed({(K + 1) / 2, ldb, 2}, size_t((K + 1) / 2) * ldb * 2, [&](uint16_t* out) {
        table(isa).pairs(K, N, src.data(), transposed ? 1 : N, transposed ? K : 1, out, ldb, stream);
    });
}

// C [M][N] = A [>= ceil(M / 16) * 16][K] . B (pairs [K / 2][ldb][2], ldb >= ceil(N / 16) * 16), K a multiple of 32;
// transposed: C^T [N][M]. With kp (increasing indices of pairs of k), the sum over those pairs only.
py::array_t<float> bf16_gemm(const std::string& isa, py::handle a_, py::handle b_, int M, int N, bool transposed,
                             py::object kp_) {
    auto A = need<uint16_t>(a_, "a", 2);
    auto B = need<uint16_t>(b_, "b", 3);
    const int K = int(A.shape(1)), ldb = int(B.shape(1));
    check(K % 32 == 0, "K (a's columns) must be a multiple of 32");
    check(M > 0 && N > 0 && A.shape(0) >= (M + 15) / 16 * 16, "a needs ceil(M / 16) * 16 rows");
    check(B.shape(0) == K / 2 && B.shape(2) == 2 && ldb >= (N + 15) / 16 * 16,
          "b must be [K / 2][ldb][2] with ldb >= ceil(N / 16) * 16");
    std::vector<int> kp;
    if (!kp_.is_none())
        for (py::handle v : kp_) {
            kp.push_back(v.cast<int>());
            check(kp.back() >= 0 && kp.back() < K / 2 && (kp.size() == 1 || kp.back() > kp[kp.size() - 2]),
                  "kp must be increasing indices of pairs of k, in [0, K / 2)");
        }
    py::array_t<float> out(transposed ? std::vector<ptrdiff_t>{N, M} : std::vector<ptrdiff_t>{M, N});
    table(isa).gemm(M, N, K, A.data(), K, B.data(), ldb, out.mutable_data(), transposed ? M : N, transposed,
                    kp.data(), kp_.is_none() ? -1 : int(kp.size()));
    return out;
}

// A stride-1 convolution's shape at 16 lanes from its input (channels, size), output channels, kernel and padding.
ConvShape stride1_shape(int ic, int ih, int iw, int oc, int kh, int kw, int ph, int pw) {
    ConvShape s{ic, ih, iw, oc, 0, 0, kh, kw, 1, 1, ph, pw, 16};
    ops::conv_output_size(s);
    return s;
}

// ops::conv_dw_bf16 on one table: xpad [ic][oh+kh-1][ow+kw-1][16], dy [oc][oh+2bh][ow+2bw][16] -> dw [oc][ic][kh][kw].
py::array_t<float> bf16_conv_dw(const std::string& isa, py::handle x_, py::handle dy_, int kh, int kw, int bh, int bw) {
    auto x = need<float>(x_, "xpad", 4);
    auto dy = need<float>(dy_, "dy", 4);
    check(x.shape(3) == 16 && dy.shape(3) == 16, "xpad and dy need 16 lanes");
    check(kh >= 1 && kw >= 1 && bh >= 0 && bw >= 0, "kh, kw >= 1 and bh, bw >= 0");
    const ConvShape s =
        stride1_shape(int(x.shape(0)), int(x.shape(1)), int(x.shape(2)), int(dy.shape(0)), kh, kw, 0, 0);
    check(s.oh >= 1 && s.ow >= 1 && dy.shape(1) == s.oh + 2 * bh && dy.shape(2) == s.ow + 2 * bw,
          "xpad must be [ic][oh+kh-1][ow+kw-1][16] for dy [oc][oh+2bh][ow+2bw][16]");
    py::array_t<float> out({s.oc, s.ic, kh, kw});
    ops::conv_dw_bf16(table(isa), s, x.data(), dy.data(), bh, bw, out.mutable_data(), 0);
    return out;
}

// ops::conv_dx_bf16 on one table: w [oc][ic][kh][kw], dy [oc][oh][ow][16] of a stride-1 convolution padded by
// (ph, pw) -> dx [ic][ih][iw][16].
py::array_t<float> bf16_conv_dx(const std::string& isa, py::handle w_, py::handle dy_, int ph, int pw) {
    auto w = need<float>(w_, "w", 4);
    auto dy = need<float>(dy_, "dy", 4);
    check(dy.shape(3) == 16 && dy.shape(0) == w.shape(0), "dy must be [oc][oh][ow][16], oc as w's");
    const int kh = int(w.shape(2)), kw = int(w.shape(3));
    const int ih = int(dy.shape(1)) - 2 * ph + kh - 1, iw = int(dy.shape(2)) - 2 * pw + kw - 1;
    check(ph >= 0 && pw >= 0 && ph < kh && pw < kw && ih >= 1 && iw >= 1, "bad padding for these shapes");
    const ConvShape s = stride1_shape(int(w.shape(1)), ih, iw, int(w.shape(0)), kh, kw, ph, pw);
    const Bf16Table& t = table(isa);
    std::vector<uint16_t> wt(ops::conv_dx_weights_bf16_count(s));
    ops::conv_dx_weights_bf16(t, s, w.data(), wt.data());
    const int bh = s.kh - 1 - ph, bw = s.kw - 1 - pw, dyh = s.oh + 2 * bh, dyw = s.ow + 2 * bw;
    std::vector<float> dy_pad(size_t(s.oc) * dyh * dyw * 16, 0.0f);  // dy inside its zero border
    for (int o = 0; o < s.oc; ++o)
        for (int y = 0; y < s.oh; ++y) {
            const float* row = dy.data() + (size_t(o) * s.oh + y) * s.ow * 16;
            std::copy(row, row + s.ow * 16, dy_pad.begin() + ((size_t(o) * dyh + y + bh) * dyw + bw) * 16);
        }
    py::array_t<float> out({s.ic, s.ih, s.iw, 16});
    ops::conv_dx_bf16(t, s, wt.data(), dy_pad.data(), out.mutable_data(), 0);
    return out;
}

}  // namespace

void bind_bf16_kernels(py::module_& m) {
    m.def("bf16_isas", &bf16_isas, "bf16 tables this build has and this CPU runs, reference first.");
    m.def("bf16_convert", &bf16_convert, py::arg("isa"), py::arg("src"), py::arg("transposed"),
          py::arg("stream") = false);
    m.def("bf16_pairs", &bf16_pairs, py::arg("isa"), py::arg("src"), py::arg("transposed"), py::arg("ldb"),
          py::arg("stream") = false);
    m.def("bf16_gemm", &bf16_gemm, py::arg("isa"), py::arg("a"), py::arg("b"), py::arg("m"), py::arg("n"),
          py::arg("transposed") = false, py::arg("kp") = py::none());
    m.def("bf16_conv_dx", &bf16_conv_dx, py::arg("isa"), py::arg("w"), py::arg("dy"), py::arg("ph"), py::arg("pw"));
    m.def("bf16_conv_dw", &bf16_conv_dw, py::arg("isa"), py::arg("xpad"), py::arg("dy"), py::arg("kh"), py::arg("kw"),
          py::arg("bh"), py::arg("bw"));
}
