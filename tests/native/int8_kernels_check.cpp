// Standalone check of the int8 microkernels of one build against the reference, byte for byte, without Python:
// for targets where the Python tests cannot run (an AArch64 cross build run under qemu-user). Exit status 0 when
// every table this CPU runs agrees with the reference on shapes that hit every vector tail.
//   aarch64-linux-gnu-g++ -O2 -std=c++17 -march=armv8.2-a+dotprod -c csrc/kernels/int8/int8_neon.cpp -o neon.o
//   aarch64-linux-gnu-g++ -O2 -static -std=c++17 -Icsrc -DCHECK_NEON tests/native/int8_kernels_check.cpp
//       csrc/kernels/int8/int8_ref.cpp neon.o -o int8_check_arm64 && qemu-aarch64 -cpu max ./int8_check_arm64
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/int8/int8.h"

using namespace lenet;

static std::mt19937 rng(7);
static int rnd(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

static bool check(const Int8Table& t) {
    bool ok = true;
    for (int m : {1, 3, 4, 5, 8, 9, 16, 17, 33, 120})
        for (int k4 : {1, 5, 100}) {
            const int mpad = (m + 15) / 16 * 16;
            std::vector<uint8_t> x(size_t(4 * k4));
            std::vector<int8_t> w(size_t(k4) * mpad * 4);
            std::vector<int32_t> bias(static_cast<size_t>(m)), wsum(static_cast<size_t>(m), 0);
            std::vector<float> mult(static_cast<size_t>(m));
            for (auto& v : x) v = uint8_t(rnd(0, 255));
            for (auto& v : w) v = int8_t(rnd(-127, 127));
            for (int i = 0; i < m; ++i) {
                for (int k = 0; k < 4 * k4; ++k) wsum[size_t(i)] += w[(size_t(k / 4) * mpad + i) * 4 + k % 4];
                bias[size_t(i)] = rnd(-30000, 30000);
                mult[size_t(i)] = 1e-3f * float(rnd(1, 100)) / float(k4);
            }
            std::vector<uint8_t> y0(static_cast<size_t>(m)), y1(static_cast<size_t>(m));
            std::vector<float> f0(static_cast<size_t>(m)), f1(static_cast<size_t>(m));
            QDenseArgs a{k4, m, mpad, x.data(), w.data(), {bias.data(), wsum.data(), mult.data(), 3, 3}, y0.data(), nullptr};
            kInt8Reference.dense(&a);
            a.y = y1.data();
            t.dense(&a);
            a.y = nullptr, a.yf = f0.data();
            kInt8Reference.dense(&a);
            a.yf = f1.data();
            t.dense(&a);
            if (y0 != y1 || std::memcmp(f0.data(), f1.data(), f0.size() * 4)) {
                std::printf("%s dense m %d k4 %d: differs\n", t.isa, m, k4);
                ok = false;
            }
        }
    for (int oc : {1, 4, 6, 7, 16})
        for (int ow : {1, 3, 4, 5, 8, 9, 17, 100}) {
            const int ic = 2, kh = 3, G = 2, oh = 2, sh = 1, hp = 4, ld = ow;
            std::vector<uint8_t> xq(size_t(4 * (ic * G * hp * ld + 64)));
            std::vector<int8_t> w(size_t(oc) * ic * kh * G * 4);
            std::vector<int32_t> bias(static_cast<size_t>(oc)), wsum(static_cast<size_t>(oc), 0);
            std::vector<float> mult(static_cast<size_t>(oc));
            for (auto& v : xq) v = uint8_t(rnd(0, 255));
            for (auto& v : w) v = int8_t(rnd(-127, 127));
            for (int i = 0; i < oc; ++i) {
                for (size_t k = 0; k < w.size() / size_t(oc); ++k) wsum[size_t(i)] += w[size_t(i) * (w.size() / size_t(oc)) + k];
                bias[size_t(i)] = rnd(-30000, 30000);
                mult[size_t(i)] = 1e-3f * float(rnd(1, 100));
            }
            std::vector<uint8_t> y0(size_t(oc * oh * ow)), y1(y0.size());
            QConvArgs a{ic, kh, G, oc, oh, ow, sh, hp, ld, xq.data(), w.data(),
                        {bias.data(), wsum.data(), mult.data(), 0, 0}, y0.data()};
            kInt8Reference.conv(&a);
            a.y = y1.data();
            t.conv(&a);
            std::vector<uint8_t> r0(size_t((ow + 15) / 16 * 16) * 4), r1(r0.size());
            kInt8Reference.regroup(xq.data(), ow, r0.data());
            t.regroup(xq.data(), ow, r1.data());
            if (y0 != y1 || std::memcmp(r0.data(), r1.data(), size_t(ow) * 4)) {
                std::printf("%s conv / regroup oc %d ow %d: differs\n", t.isa, oc, ow);
                ok = false;
            }
        }
    std::printf("%s: %s\n", t.isa, ok ? "agrees with the reference" : "FAILED");
    return ok;
}

int main() {
    bool ok = check(kInt8Reference);
#if defined(CHECK_NEON)
    ok = check(*int8_table_neon_dot()) && ok;  // needs a CPU with asimddp (qemu-aarch64 -cpu max has it)
#endif
    return ok ? 0 : 1;
}
