// One persistent pool of worker threads (spin, then sleep) shared by every op; no per-op thread creation.
//
// Each thread owns a contiguous range of the tasks and claims from it first; a thread whose range is done steals
// from the others' ranges. The caller works too: when the machine is busy and a worker is not scheduled, the
// caller runs that worker's tasks itself instead of waiting for it, and when every thread is on time the split
// is the even static one (which matters for a few coarse tasks, such as the 4 blocks of a batch of 64). A worker joins a
// job only while the job is open; the caller closes it once every task is claimed and no joined worker is still
// running, so a late worker never touches a finished job.
//
// Which thread runs a task is therefore not fixed: ops that reduce across tasks keep one partial result per
// task (not per thread) and sum them in task order, which makes results independent of the thread count.
//
// A job may come in phases (parallel_phases): each phase's tasks are split among the threads the same way, and a
// thread claims a phase's tasks only once every task of the earlier phases has been claimed. So a task may wait
// (wait_for) for work that a task of an earlier phase does, which some thread is then running, while the threads
// that finish the earlier phase first go on to the later one instead of waiting at a barrier between two jobs.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace lenet {

class ThreadPool {
public:
    static constexpr int kMaxThreads = 64;
    static ThreadPool& instance();
    ~ThreadPool();

    int threads() const { return nthreads_; }
    void set_threads(int n);  // clamped to [1, kMaxThreads]; the calling thread is thread 0

    // fn(task, thread) for every task in [0, ntasks), `thread` in [0, threads()) naming the executing thread
    // (for per-thread scratch). Returns when all are done. Denormals flush to zero inside. Not reentrant: call
    // only from one (the Python) thread.
    template <class F>
    void parallel_for(int ntasks, F&& fn) {
        parallel_phases({ntasks}, std::forward<F>(fn));
    }
    // fn(task, thread) for every task of kMaxPhases phases or fewer, with counts[p] tasks in phase p, numbered on
    // from the earlier phases' (phase 1's first task is counts[0]). Returns when all are done.
    static constexpr int kMaxPhases = 2;
    template <class F>
    void parallel_phases(std::initializer_list<int> counts, F&& fn) {
        using Fn = std::remove_reference_t<F>;
        run(counts, [](void* ctx, int task, int thread) { (*static_cast<Fn*>(ctx))(task, thread); }, &fn);
    }

private:
    using Invoke = void (*)(void*, int, int);
    ThreadPool();
    void run(std::initializer_list<int> counts, Invoke invoke, void* ctx);
    void worker(int index, uint64_t seen);
    void claim_tasks(int thread);
    void stop_workers();

    // job_state_: [generation (32 bits) | closed (1 bit) | active workers (31 bits)]
    static constexpr uint64_t kClosed = 1ull << 31;
    static constexpr uint64_t kActiveMask = kClosed - 1;

    int nthreads_ = 1;
    std::vector<std::thread> workers_;
    // The current job, published by a release increment of generation_.
    Invoke invoke_ = nullptr;
    void* ctx_ = nullptr;
    struct alignas(64) Range {
        std::atomic<int> next{0};
        int end = 0;
    };
    struct Phase {
        int parts = 0;  // how many ranges this phase of the current job is split into
        Range ranges[kMaxThreads];
    };
    int job_phases_ = 0;
    Phase phases_[kMaxPhases];  // the current job's per-thread ranges, per phase
    void run_range(Range& r, int thread);
    std::atomic<uint64_t> job_state_{kClosed};
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> sleeping_{0};
    std::atomic<bool> caller_waiting_{false};
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable wake_;  // workers sleep here between jobs
    std::condition_variable done_;  // the caller sleeps here until the last joined worker finishes
};

// For a task of a later phase of a job (ThreadPool::parallel_phases): returns once `counter` (which tasks of earlier
// phases raise, with release order, as their work is done) reaches `value`; spins, then yields the core.
void wait_for(const std::atomic<int>& counter, int value);

// Per-thread scratch memory, 64-byte aligned, grown on demand and reused across calls (no allocation on the
// hot path once warm). Slot s (0..kScratchSlots-1) of thread t is independent of every other slot. In use: 0 and
// 1 a convolution's padded input and im2col buffers, 2-5 a block's activations, gradients and input in the training
// step and inference, 6 sums, int8 work and a linear layer's ReLU-masked output gradient, 7-8 the flat layers'
// activations and gradients of a chunk of blocks in the training step, 9 a Winograd convolution's transformed input
// tile (and its weights where derived per call), 10-11 a bf16 weight gradient's operands (ops/conv_bf16.h), 12 the
// sparse backward of a fused conv-pool layer (kernels/simd/conv_pool_sparse.h).
constexpr int kScratchSlots = 13;
float* scratch(int thread, int slot, size_t floats);

}  // namespace lenet
