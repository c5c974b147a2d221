// Table lookup and array checks shared by the kernel test bindings (int8_kernels.cpp, bf16_kernels.cpp).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace lenet::kernel_arrays {

namespace py = pybind11;

// A C-contiguous array of exactly dtype T and rank `ndim` (no conversion: a test must see what it passes).
template <class T>
inline py::array_t<T> need(py::handle h, const char* name, int ndim) {
    if (!py::isinstance<py::array>(h)) throw py::type_error(std::string(name) + " must be a numpy array");
    py::array a = py::reinterpret_borrow<py::array>(h);
    if (!a.dtype().is(py::dtype::of<T>()))
        throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(py::dtype::of<T>())));
    if (a.ndim() != ndim) throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) + " dimensions");
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    return py::reinterpret_borrow<py::array_t<T>>(a);
}

// The table found for `isa` (int8_table_named, bf16_table_named...), or a ValueError naming what is missing.
template <class Table>
const Table& available(const Table* t, const char* kind, const std::string& isa) {
    if (!t) throw py::value_error(std::string(kind) + " instruction set '" + isa + "' is not available on this CPU/build");
    return *t;
}

inline void check(bool ok, const std::string& why) {
    if (!ok) throw py::value_error(why);
}

}  // namespace lenet::kernel_arrays
