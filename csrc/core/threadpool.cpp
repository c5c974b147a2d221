#include "threadpool.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lenet {

namespace {

// Flush denormals to zero (and treat denormal inputs as zero): they cost 100x on x86 and are noise in training.
struct FlushDenormals {
#if defined(__x86_64__) || defined(__i386__)
    unsigned saved = _mm_getcsr();
    FlushDenormals() { _mm_setcsr(saved | 0x8040); }
    ~FlushDenormals() { _mm_setcsr(saved); }
#elif defined(__aarch64__)
    uint64_t saved;
    FlushDenormals() {
        __asm__ volatile("mrs %0, fpcr" : "=r"(saved));
        __asm__ volatile("msr fpcr, %0" : : "r"(saved | (1ull << 24)));
    }
    ~FlushDenormals() { __asm__ volatile("msr fpcr, %0" : : "r"(saved)); }
#endif
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ volatile("yield");
#endif
}

constexpr int kSpinIterations = 1 << 16;  // about 100 us of spinning before a worker sleeps

}  // namespace

ThreadPool& ThreadPool::instance() {
    static ThreadPool pool;
    return pool;
}

ThreadPool::ThreadPool() = default;
ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
        generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
}

void ThreadPool::set_threads(int n) {
    if (n < 1) n = 1;
    if (n > kMaxThreads) n = kMaxThreads;
    if (n == nthreads_) return;
    stop_workers();
    nthreads_ = n;
    for (int i = 1; i < n; ++i) workers_.emplace_back(&ThreadPool::worker, this, i);
}

void ThreadPool::run_share(int thread) {
    const int begin = range_begin(ntasks_, job_threads_, thread), end = range_begin(ntasks_, job_threads_, thread + 1);
    for (int t = begin; t < end; ++t) invoke_(ctx_, t, thread);
}

void ThreadPool::worker(int index) {
    FlushDenormals ftz;
    uint64_t seen = generation_.load();
    for (;;) {
        int spins = 0;
        while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
            cpu_relax();
            ++spins;
        }
        if (generation_.load(std::memory_order_acquire) == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            sleeping_.fetch_add(1);
            wake_.wait(lock, [&] { return generation_.load() != seen; });
            sleeping_.fetch_sub(1);
        }
        seen = generation_.load(std::memory_order_acquire);
        if (stop_) return;
        if (index < job_threads_) run_share(index);
        remaining_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void ThreadPool::run(int ntasks, Invoke invoke, void* ctx) {
    FlushDenormals ftz;
    if (ntasks <= 0) return;
    invoke_ = invoke;
    ctx_ = ctx;
    ntasks_ = ntasks;
    job_threads_ = ntasks < nthreads_ ? ntasks : nthreads_;
    if (nthreads_ == 1) {
        run_share(0);
        return;
    }
    remaining_.store(nthreads_ - 1, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    if (sleeping_.load() > 0) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        wake_.notify_all();
    }
    run_share(0);
    while (remaining_.load(std::memory_order_acquire) != 0) cpu_relax();
}

namespace {
struct ScratchBlock {
    float* ptr = nullptr;
    size_t floats = 0;
    ~ScratchBlock() { std::free(ptr); }
};
struct ThreadScratch {
    ScratchBlock slots[4];
};
std::vector<std::unique_ptr<ThreadScratch>>& scratch_table() {
    static std::vector<std::unique_ptr<ThreadScratch>> table(ThreadPool::kMaxThreads);
    return table;
}
}  // namespace

float* scratch(int thread, int slot, size_t floats) {
    auto& table = scratch_table();
    auto& ts = table[size_t(thread)];  // only thread `thread` touches this entry
    if (!ts) ts = std::make_unique<ThreadScratch>();
    ScratchBlock& b = ts->slots[slot];
    if (b.floats < floats) {
        std::free(b.ptr);
        const size_t bytes = ((floats * sizeof(float) + 63) / 64) * 64;
        b.ptr = static_cast<float*>(std::aligned_alloc(64, bytes));
        if (!b.ptr) std::abort();
        b.floats = floats;
    }
    return b.ptr;
}

}  // namespace lenet
