#include "threadpool.h"

#include <cstdlib>
#include <memory>
#include <stdexcept>

#include "aligned.h"

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

// Spin briefly before sleeping: a training step issues a kernel every few tens of microseconds, but on a shared
// machine a spinning thread steals the core another thread of ours needs.
constexpr int kWorkerSpins = 1 << 14;  // before a worker sleeps (tens of microseconds)
constexpr int kCallerSpins = 1 << 12;  // before the caller sleeps waiting for joined workers (or wait_for yields)

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
    // Workers start from the current generation: one that starts late must still see the next job as new.
    const uint64_t start = generation_.load();
    for (int i = 1; i < n; ++i) workers_.emplace_back(&ThreadPool::worker, this, i, start);
}

void ThreadPool::run_range(Range& r, int thread) {
    for (int t; (t = r.next.fetch_add(1, std::memory_order_relaxed)) < r.end;) invoke_(ctx_, t, thread);
}

// Phase by phase: own range first, then the others' leftovers, starting with the next thread's. A thread leaves a
// phase only when every range of it is claimed (a claimed range stays so).
void ThreadPool::claim_tasks(int thread) {
    for (int p = 0; p < job_phases_; ++p) {
        Phase& phase = phases_[p];
        const int parts = phase.parts;
        if (thread < parts) run_range(phase.ranges[thread], thread);
        for (int i = 1; i <= parts; ++i) run_range(phase.ranges[(thread + i) % parts], thread);
    }
}

void ThreadPool::worker(int index, uint64_t seen) {
    FlushDenormals ftz;
    for (;;) {
        for (int spins = 0; generation_.load(std::memory_order_acquire) == seen && spins < kWorkerSpins; ++spins)
            cpu_relax();
        if (generation_.load(std::memory_order_acquire) == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            sleeping_.fetch_add(1);
            wake_.wait(lock, [&] { return generation_.load() != seen; });
            sleeping_.fetch_sub(1);
        }
        seen = generation_.load(std::memory_order_acquire);
        if (stop_) return;
        // Join the job if it is still open (same generation, not closed).
        const uint64_t tag = (seen & 0xffffffffull) << 32;
        uint64_t state = job_state_.load();
        bool joined = false;
        while ((state & ~kActiveMask & ~kClosed) == tag && !(state & kClosed))
            if (job_state_.compare_exchange_weak(state, state + 1)) {
                joined = true;
                break;
            }
        if (!joined) continue;
        claim_tasks(index);
        if (((job_state_.fetch_sub(1) - 1) & kActiveMask) == 0 && caller_waiting_.load()) {
            { std::lock_guard<std::mutex> lock(mutex_); }
            done_.notify_one();
        }
    }
}

void ThreadPool::run(std::initializer_list<int> counts, Invoke invoke, void* ctx) {
    FlushDenormals ftz;
    if (counts.size() > size_t(kMaxPhases)) throw std::invalid_argument("a job has at most kMaxPhases phases");
    int ntasks = 0;
    job_phases_ = 0;
    for (int count : counts) {
        if (count <= 0) continue;
        Phase& phase = phases_[job_phases_++];
        phase.parts = count < nthreads_ ? count : nthreads_;
        for (int t = 0; t < phase.parts; ++t) {
            phase.ranges[t].next.store(ntasks + int(int64_t(count) * t / phase.parts), std::memory_order_relaxed);
            phase.ranges[t].end = ntasks + int(int64_t(count) * (t + 1) / phase.parts);
        }
        ntasks += count;
    }
    if (ntasks == 0) return;
    invoke_ = invoke;
    ctx_ = ctx;
    if (nthreads_ == 1 || ntasks == 1) {
        claim_tasks(0);
        return;
    }
    const uint64_t gen = generation_.load() + 1;
    job_state_.store((gen & 0xffffffffull) << 32);  // open, no worker joined yet
    generation_.store(gen);                          // seq_cst: ordered before the load of sleeping_ below
    if (sleeping_.load() > 0) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        wake_.notify_all();
    }
    claim_tasks(0);
    // Every task is claimed: close the job once no joined worker is still running one.
    for (int spins = 0;; ++spins) {
        uint64_t state = job_state_.load();
        if ((state & kActiveMask) == 0 && job_state_.compare_exchange_strong(state, state | kClosed)) return;
        if (spins < kCallerSpins) {
            cpu_relax();
            continue;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        caller_waiting_.store(true);
        done_.wait(lock, [&] { return (job_state_.load() & kActiveMask) == 0; });
        caller_waiting_.store(false);
    }
}

void wait_for(const std::atomic<int>& counter, int value) {
    for (int spins = 0; counter.load(std::memory_order_acquire) < value; ++spins) {
        if (spins < kCallerSpins) cpu_relax();
        else std::this_thread::yield();
    }
}

namespace {
struct ScratchBlock {
    float* ptr = nullptr;
    size_t floats = 0;
    ~ScratchBlock() { std::free(ptr); }
};
struct ThreadScratch {
    ScratchBlock slots[kScratchSlots];
};
std::vector<std::unique_ptr<ThreadScratch>>& scratch_table() {
    static std::vector<std::unique_ptr<ThreadScratch>> table(ThreadPool::kMaxThreads);
    return table;
}
}  // namespace

float* scratch(int thread, int slot, size_t floats) {
    auto& ts = scratch_table()[size_t(thread)];  // only thread `thread` touches this entry
    if (!ts) ts = std::make_unique<ThreadScratch>();
    ScratchBlock& b = ts->slots[slot];
    if (b.floats < floats) {
        std::free(b.ptr);
        b.ptr = static_cast<float*>(line_alloc(floats * sizeof(float)));
        if (!b.ptr) std::abort();
        b.floats = floats;
    }
    return b.ptr;
}

}  // namespace lenet
