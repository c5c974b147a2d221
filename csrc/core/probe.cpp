#include "probe.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>  // sched_{get,set}affinity(0, ...): the calling thread (glibc and bionic alike)
#endif

namespace lenet {

namespace {
using Clock = std::chrono::steady_clock;
constexpr auto kStartBudget = std::chrono::milliseconds(500);  // for the partner thread to start running
constexpr auto kBatchBudget = std::chrono::milliseconds(50);
constexpr int kBatches = 5;

// Two of the CPUs this process may run on, each thread pinned to one for the measurement: unpinned, the scheduler
// may put both spinning threads on one CPU, and each hand-over then waits for a time slice. Restores the caller's
// affinity when done. Elsewhere than Linux the threads stay where the scheduler puts them.
class PinnedPair {
public:
#if defined(__linux__)
    PinnedPair() {
        if (sched_getaffinity(0, sizeof saved_, &saved_) != 0) return;
        for (int c = 0, found = 0; c < CPU_SETSIZE && found < 2; ++c)
            if (CPU_ISSET(c, &saved_)) cpus_[found++] = c;
        if (cpus_[1] < 0) return;
        ok_ = pin(cpus_[0]);
    }
    ~PinnedPair() {
        if (ok_) sched_setaffinity(0, sizeof saved_, &saved_);
    }
    bool two_cpus() const { return cpus_[1] >= 0; }
    void pin_partner() const {
        if (ok_) pin(cpus_[1]);
    }

private:
    static bool pin(int cpu) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        return sched_setaffinity(0, sizeof one, &one) == 0;
    }
    cpu_set_t saved_{};
    int cpus_[2] = {-1, -1};
    bool ok_ = false;
#else
    bool two_cpus() const { return std::thread::hardware_concurrency() >= 2; }
    void pin_partner() const {}
#endif
};

struct alignas(64) Line {
    std::atomic<int> value{0};
};

// One batch: the caller stores 2i+1, the partner answers 2i+2. False when it ran out of time.
bool ping_pong(Line& line, const std::atomic<bool>& partner_ready, int trips, double& ns) {
    const auto start_deadline = Clock::now() + kStartBudget;
    while (!partner_ready.load(std::memory_order_acquire))
        if (Clock::now() > start_deadline) return false;
    const auto begin = Clock::now(), deadline = begin + kBatchBudget;
    for (int i = 0; i < trips; ++i) {
        line.value.store(2 * i + 1, std::memory_order_release);
        for (int spins = 1; line.value.load(std::memory_order_acquire) != 2 * i + 2; ++spins)
            if (spins % 1024 == 0 && Clock::now() > deadline) return false;
    }
    ns = std::chrono::duration<double, std::nano>(Clock::now() - begin).count() / trips;
    return true;
}
}  // namespace

double core_round_trip_ns(int trips) {
    if (trips < 1) return NAN;
    const PinnedPair pair;
    if (!pair.two_cpus()) return NAN;
    std::vector<double> batches;
    for (int b = 0; b < kBatches; ++b) {
        Line line;
        std::atomic<bool> ready{false}, stop{false};
        std::thread partner([&] {
            pair.pin_partner();
            ready.store(true, std::memory_order_release);
            for (int i = 0; i < trips; ++i) {
                while (line.value.load(std::memory_order_acquire) != 2 * i + 1)
                    if (stop.load(std::memory_order_relaxed)) return;
                line.value.store(2 * i + 2, std::memory_order_release);
            }
        });
        double ns = 0;
        const bool done = ping_pong(line, ready, trips, ns);
        stop.store(true, std::memory_order_relaxed);
        partner.join();
        if (!done) return NAN;
        batches.push_back(ns);
    }
    std::nth_element(batches.begin(), batches.begin() + kBatches / 2, batches.end());
    return batches[kBatches / 2];
}

}  // namespace lenet
