// The int8 microkernels (kernels/int8/int8.h) callable from Python on one named instruction set, so that tests can
// hold every SIMD table to the reference byte for byte (lenet._core.int8_isas / int8_conv / int8_dense).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "../kernels/int8/int8_dispatch.h"
#include "kernel_arrays.h"

namespace py = pybind11;
using namespace lenet;
using kernel_arrays::check;
using kernel_arrays::need;

namespace {

const Int8Table& table(const std::string& isa) { return kernel_arrays::available(int8_table_named(isa), "int8", isa); }

struct Rq {
    py::array_t<int32_t> bias, wsum;
    py::array_t<float> mult;
    QRequant rq;
    Rq(py::handle b, py::handle s, py::handle m, int M, int zero, int lo)
        : bias(need<int32_t>(b, "bias", 1)), wsum(need<int32_t>(s, "wsum", 1)), mult(need<float>(m, "mult", 1)) {
        check(bias.shape(0) == M && wsum.shape(0) == M && mult.shape(0) == M,
              "bias, wsum and mult need one value per output channel (" + std::to_string(M) + ")");
        check(zero >= 0 && zero <= 255 && lo >= 0 && lo <= 255, "zero and lo must be in [0, 255]");
        rq = {bias.data(), wsum.data(), mult.data(), zero, lo};
    }
};

// xq: the flat uint32 groups of QConvArgs (as bytes), rows of ld groups, hp rows per (input channel, group);
// w [oc][ic][kh][groups][4] int8 -> y [oc][oh][ow] uint8.
py::array_t<uint8_t> int8_conv(const std::string& isa, py::handle xq_, py::handle w_, py::handle bias,
                               py::handle wsum, py::handle mult, int zero, int lo, int hp, int ld, int oh, int ow,
                               int sh) {
    const Int8Table& t = table(isa);
    auto xq = need<uint8_t>(xq_, "xq", 1);
    auto w = need<int8_t>(w_, "w", 5);
    const int oc = int(w.shape(0)), ic = int(w.shape(1)), kh = int(w.shape(2)), G = int(w.shape(3));
    check(w.shape(4) == 4, "w.shape[4] must be 4");
    check(oc > 0 && ic > 0 && G > 0 && oh > 0 && ow > 0 && sh > 0 && kh > 0 && ld > 0, "sizes must be positive");
    check((oh - 1) * sh + kh <= hp, "the output rows read past hp");
    const ptrdiff_t need_bytes = 4 * ((ptrdiff_t(ic * G - 1) * hp + (oh - 1) * sh + kh - 1) * ld + ow + 32);
    check(xq.shape(0) >= need_bytes, "xq must hold at least " + std::to_string(need_bytes) + " bytes");
    Rq r(bias, wsum, mult, oc, zero, lo);
    py::array_t<uint8_t> y({oc, oh, ow});
    QConvArgs a{ic, kh, G, oc, oh, ow, sh, hp, ld, xq.data(), w.data(), r.rq, y.mutable_data()};
    t.conv(&a);
    return y;
}

// src [>= n + 67] uint8 -> the n groups src[i + 0..3], as uint8 [n][4].
py::array_t<uint8_t> int8_regroup(const std::string& isa, py::handle src_, int n) {
    const Int8Table& t = table(isa);
    auto src = need<uint8_t>(src_, "src", 1);
    check(n > 0 && src.shape(0) >= n + 67, "src must hold at least n + 67 bytes");
    std::vector<uint8_t> dst(size_t((n + 15) / 16 * 16) * 4);
    t.regroup(src.data(), n, dst.data());
    py::array_t<uint8_t> y({n, 4});
    std::memcpy(y.mutable_data(), dst.data(), size_t(n) * 4);
    return y;
}

// x [k4 * 4] uint8, w [k4][mpad][4] int8 -> y [m] uint8 codes, or float32 with float_out.
py::array int8_dense(const std::string& isa, py::handle x_, py::handle w_, py::handle bias, py::handle wsum,
                     py::handle mult, int zero, int lo, int m, bool float_out) {
    const Int8Table& t = table(isa);
    auto x = need<uint8_t>(x_, "x", 1);
    auto w = need<int8_t>(w_, "w", 3);
    const int k4 = int(w.shape(0)), mpad = int(w.shape(1));
    check(w.shape(2) == 4 && x.shape(0) == 4 * k4, "x must hold 4 * w.shape[0] bytes, w.shape[2] must be 4");
    check(mpad % 16 == 0 && m > 0 && m <= mpad, "w.shape[1] must be a multiple of 16 and at least m > 0");
    Rq r(bias, wsum, mult, m, zero, lo);
    if (float_out) {
        py::array_t<float> y(m);
        QDenseArgs a{k4, m, mpad, x.data(), w.data(), r.rq, nullptr, y.mutable_data()};
        t.dense(&a);
        return std::move(y);
    }
    py::array_t<uint8_t> y(m);
    QDenseArgs a{k4, m, mpad, x.data(), w.data(), r.rq, y.mutable_data(), nullptr};
    t.dense(&a);
    return std::move(y);
}

}  // namespace

void bind_int8_kernels(py::module_& m) {
    m.def("int8_isas", &int8_isas, "int8 instruction sets this build has and this CPU runs, reference first.");
    m.def("int8_conv", &int8_conv, py::arg("isa"), py::arg("xq"), py::arg("w"), py::arg("bias"), py::arg("wsum"),
          py::arg("mult"), py::arg("zero"), py::arg("lo"), py::arg("hp"), py::arg("ld"), py::arg("oh"), py::arg("ow"),
          py::arg("sh"));
    m.def("int8_regroup", &int8_regroup, py::arg("isa"), py::arg("src"), py::arg("n"));
    m.def("int8_dense", &int8_dense, py::arg("isa"), py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("wsum"),
          py::arg("mult"), py::arg("zero"), py::arg("lo"), py::arg("m"), py::arg("float_out"));
}
