// One persistent pool of worker threads (spin, then sleep) shared by every op; no per-op thread creation.
// parallel_for splits tasks into contiguous ranges, one per thread, so a given thread count always assigns the
// same tasks to the same thread: per-thread partial sums, reduced in thread order, are reproducible.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lenet {

class ThreadPool {
public:
    static constexpr int kMaxThreads = 64;
    static ThreadPool& instance();
    ~ThreadPool();

    int threads() const { return nthreads_; }
    void set_threads(int n);  // clamped to [1, kMaxThreads]; the calling thread is thread 0

    // fn(task, thread) for every task in [0, ntasks); returns when all are done. Denormals flush to zero
    // inside. Not reentrant: call only from one (the Python) thread.
    template <class F>
    void parallel_for(int ntasks, F&& fn) {
        run(ntasks, [](void* ctx, int task, int thread) { (*static_cast<F*>(ctx))(task, thread); }, &fn);
    }

    // First task of `thread` when ntasks are split over `nthreads` threads.
    static int range_begin(int ntasks, int nthreads, int thread) {
        return int(int64_t(ntasks) * thread / nthreads);
    }

private:
    using Invoke = void (*)(void*, int, int);
    ThreadPool();
    void run(int ntasks, Invoke invoke, void* ctx);
    void worker(int index);
    void run_share(int thread);
    void stop_workers();

    int nthreads_ = 1;
    std::vector<std::thread> workers_;
    // The current job.
    Invoke invoke_ = nullptr;
    void* ctx_ = nullptr;
    int ntasks_ = 0;
    int job_threads_ = 1;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> remaining_{0};
    std::atomic<int> sleeping_{0};
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable wake_;
};

// Per-thread scratch memory, 64-byte aligned, grown on demand and reused across calls (no allocation on the
// hot path once warm). Slot s of thread t is independent of every other slot.
float* scratch(int thread, int slot, size_t floats);

}  // namespace lenet
