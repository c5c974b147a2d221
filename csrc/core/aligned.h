// std::vector storage on 64-byte (cache-line) boundaries. The kernels load whole lines of floats; from a plain
// std::vector, whose large blocks glibc maps at 16 bytes past a page, every such load would straddle two lines.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace lenet {

constexpr size_t kLineFloats = 64 / sizeof(float);  // floats per 64-byte line
// `floats` rounded up to whole lines: where the next array starts on a line when arrays share one buffer.
constexpr size_t to_line(size_t floats) { return (floats + kLineFloats - 1) / kLineFloats * kLineFloats; }
// n rounded up to a multiple of m (a tile's rows or columns, a GEMM's K).
constexpr int round_up(int n, int m) { return (n + m - 1) / m * m; }

// `bytes` rounded up to whole 64-byte lines (at least one), starting on a line; null when out of memory. Freed with
// std::free.
inline void* line_alloc(size_t bytes) { return std::aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64); }

template <class T>
struct LineAllocator {
    using value_type = T;
    LineAllocator() = default;
    template <class U>
    LineAllocator(const LineAllocator<U>&) {}
    T* allocate(size_t n) {
        void* p = line_alloc(n * sizeof(T));
        if (!p) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, size_t) { std::free(p); }
    template <class U>
    bool operator==(const LineAllocator<U>&) const { return true; }
    template <class U>
    bool operator!=(const LineAllocator<U>&) const { return false; }
};

template <class T>
using LineVector = std::vector<T, LineAllocator<T>>;

}  // namespace lenet
