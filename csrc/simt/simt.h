// SIMT emulation for tests: runs the CUDA kernels of csrc/cuda/*.cuh on the CPU, unchanged.
//
// Blocks run one after another. Under the parallel schedule every CUDA thread of a block is a std::thread;
// under the serial schedules it is a fiber (ucontext) on the launching thread. __syncthreads is a
// per-block barrier, __shfl_*_sync a per-warp exchange, atomics are std::atomic_ref, __shared__
// storage is static (one block runs at a time, so it is per block). Misuse that a GPU would turn into
// silent garbage or a hang fails loudly instead (simt::Error naming the thread): a shuffle whose mask
// names an exited lane or omits the caller, lanes of a warp shuffling with different masks, a read
// from a lane outside the mask, __syncthreads after some threads of the block returned, a deadlock.
//
// Schedules: kParallel lets the threads run freely (for ThreadSanitizer, which sees the real
// happens-before order); kForward / kReverse run one fiber at a time, switching only at
// __syncthreads, shuffles and exits, in thread order or reverse thread order. A kernel whose result
// depends on the order of its threads between two barriers (a missing __syncthreads) gives different
// results under kForward and kReverse, deterministically.
//
// flush_to_zero emulates nvcc's --use_fast_math (-ftz=true): subnormal float inputs and results of
// arithmetic and comparisons are treated as zero (MXCSR FTZ|DAZ on x86, FPCR.FZ on AArch64). Unlike
// the GPU it also flushes doubles.
//
// Include this after ATen/c10 headers and before the kernel headers; only test builds include it.
#pragma once
#define UNLEARNX_SIMT 1

#include <math.h>  // the float overloads of exp/log in the global namespace, as in device code

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <ucontext.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

static_assert(std::is_same_v<decltype(exp(1.0f)), float> && std::is_same_v<decltype(log(1.0f)), float>,
              "float exp/log must stay float, as in device code");

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
// Uninitialised shared memory starts as whatever the previous block left (zeros before the first).
#define __shared__ static
#define __launch_bounds__(...)

namespace simt {

enum class Schedule { kParallel, kForward, kReverse };

struct Options {
  Schedule schedule = Schedule::kParallel;
  bool flush_to_zero = false;
  int multiprocessors = 2;  // what the launch geometry asks of the "device"
};

inline Options& options() {
  static Options opts;
  return opts;
}

class Error : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

constexpr int kWarpSize = 32;
struct Aborted {};  // unwinds the other threads once one has failed

struct Warp {
  uint32_t mask = 0;
  unsigned arrived = 0;
  uint64_t generation = 0;
  uint64_t slot[kWarpSize] = {};
  int source[kWarpSize] = {};
  uint64_t result[kWarpSize] = {};
};

struct Block {
  Block(unsigned n, Schedule s)
      : threads(n), schedule(s), exited(n, 0), live(n), warps((n + kWarpSize - 1) / kWarpSize),
        warp_cv((n + kWarpSize - 1) / kWarpSize), ready(n), finished(n, 0) {}
  const unsigned threads;
  const Schedule schedule;
  std::mutex mu;
  std::vector<char> exited;
  unsigned live;
  unsigned barrier_arrived = 0;
  uint64_t barrier_generation = 0;
  std::condition_variable barrier_cv;
  std::vector<Warp> warps;
  std::vector<std::condition_variable> warp_cv;
  // Serial schedules: a blocked fiber's wait condition, and whether its kernel body has ended.
  std::vector<std::function<bool()>> ready;
  std::vector<char> finished;
  ucontext_t scheduler;
  std::vector<ucontext_t>* fibers = nullptr;
  bool failed = false;
  std::string error;
};

struct ThreadContext {
  Block* block;
  unsigned tid;
  dim3 thread_idx, block_idx, block_dim, grid_dim;
};

inline thread_local ThreadContext* t_context = nullptr;

inline ThreadContext& context() {
  if (t_context == nullptr) throw Error("simt: a device function was called outside simt::launch");
  return *t_context;
}

inline std::string where(const ThreadContext& c) {
  return "block " + std::to_string(c.block_idx.x) + ", thread " + std::to_string(c.tid) + " (warp " +
         std::to_string(c.tid / kWarpSize) + ", lane " + std::to_string(c.tid % kWarpSize) + ")";
}

// Under b.mu. Records the first failure, wakes everyone, unwinds this thread.
[[noreturn]] inline void fail(Block& b, const std::string& message) {
  if (!b.failed) {
    b.failed = true;
    b.error = message;
  }
  b.barrier_cv.notify_all();
  for (auto& cv : b.warp_cv) cv.notify_all();
  throw Aborted{};
}

// Under the lock: block until `done` holds (parallel), or yield to the scheduler, which resumes this
// fiber once `done` holds and its turn comes (serial).
inline void wait(Block& b, std::unique_lock<std::mutex>& lk, unsigned me, std::condition_variable& cv,
                 std::function<bool()> done) {
  if (b.schedule == Schedule::kParallel) {
    cv.wait(lk, [&] { return b.failed || done(); });
  } else {
    b.ready[me] = std::move(done);
    lk.unlock();  // one OS thread runs every fiber: never switch while holding the lock
    swapcontext(&(*b.fibers)[me], &b.scheduler);
    lk.lock();
    b.ready[me] = nullptr;
  }
  if (b.failed) throw Aborted{};
}

inline void syncthreads() {
  ThreadContext& c = context();
  Block& b = *c.block;
  std::unique_lock<std::mutex> lk(b.mu);
  if (b.failed) throw Aborted{};
  if (b.live != b.threads)
    fail(b, "simt: __syncthreads reached by " + where(c) + " after " + std::to_string(b.threads - b.live) +
                " threads of the block returned (a barrier must be reached by every thread)");
  const uint64_t generation = b.barrier_generation;
  if (++b.barrier_arrived == b.live) {
    b.barrier_arrived = 0;
    ++b.barrier_generation;
    b.barrier_cv.notify_all();
    if (b.schedule == Schedule::kParallel) return;
  }
  // Serial schedules yield here even when this thread completed the barrier, so that the threads
  // take turns between barriers.
  wait(b, lk, c.tid, b.barrier_cv, [&b, generation] { return b.barrier_generation != generation; });
}

// One warp-wide exchange: lane l gets the value of lane source_of_lane(l) (its own value when that is
// out of range, as __shfl_up/down do).
template <typename T>
T exchange(uint32_t mask, T value, int source_lane, const char* op) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move values of up to 8 bytes");
  ThreadContext& c = context();
  Block& b = *c.block;
  const unsigned lane = c.tid % kWarpSize, w = c.tid / kWarpSize, base = w * kWarpSize;
  std::unique_lock<std::mutex> lk(b.mu);
  if (b.failed) throw Aborted{};
  auto hex = [](uint32_t m) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", m);
    return std::string(buf);
  };
  if (!(mask >> lane & 1u)) fail(b, std::string("simt: ") + op + " by " + where(c) + " with mask " + hex(mask) + " that does not name its own lane");
  for (unsigned l = 0; l < kWarpSize; ++l) {
    if (!(mask >> l & 1u)) continue;
    if (base + l >= b.threads || b.exited[base + l])
      fail(b, std::string("simt: ") + op + " by " + where(c) + " with mask " + hex(mask) + " names lane " +
                  std::to_string(l) + ", which has exited (or does not exist)");
  }
  Warp& wp = b.warps[w];
  if (wp.arrived > 0 && wp.mask != mask)
    fail(b, std::string("simt: ") + op + ": lanes of warp " + std::to_string(w) + " disagree on the mask (" +
                hex(wp.mask) + " vs " + hex(mask) + " from " + where(c) + ")");
  wp.mask = mask;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  wp.slot[lane] = bits;
  wp.source[lane] = source_lane >= 0 && source_lane < kWarpSize ? source_lane : static_cast<int>(lane);
  const uint64_t generation = wp.generation;
  if (++wp.arrived == static_cast<unsigned>(std::popcount(mask))) {
    for (unsigned l = 0; l < kWarpSize; ++l) {
      if (!(mask >> l & 1u)) continue;
      const int s = wp.source[l];
      if (!(mask >> s & 1u))
        fail(b, std::string("simt: ") + op + ": lane " + std::to_string(l) + " of warp " + std::to_string(w) +
                    " reads lane " + std::to_string(s) + ", which is not in the mask " + hex(mask));
      wp.result[l] = wp.slot[s];
    }
    wp.arrived = 0;
    ++wp.generation;
    b.warp_cv[w].notify_all();
  } else {
    wait(b, lk, c.tid, b.warp_cv[w], [&wp, generation] { return wp.generation != generation; });
  }
  T out;
  std::memcpy(&out, &wp.result[lane], sizeof(T));
  return out;
}

inline void set_flush_to_zero() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_setcsr(_mm_getcsr() | 0x8040u);  // FTZ | DAZ
#elif defined(__aarch64__)
  uint64_t fpcr;
  asm volatile("mrs %0, fpcr" : "=r"(fpcr));
  fpcr |= uint64_t(1) << 24;  // FZ
  asm volatile("msr fpcr, %0" : : "r"(fpcr));
#else
#error "simt: no flush-to-zero emulation for this architecture"
#endif
}

inline void thread_main(Block& b, ThreadContext* ctx, const std::function<void()>& body) {
  t_context = ctx;
  if (options().flush_to_zero) set_flush_to_zero();
  try {
    body();
    std::unique_lock<std::mutex> lk(b.mu);
    if (b.failed) throw Aborted{};
    b.exited[ctx->tid] = 1;
    --b.live;
    if (b.barrier_arrived > 0)
      fail(b, "simt: " + where(*ctx) + " returned while other threads wait at __syncthreads");
    const unsigned w = ctx->tid / kWarpSize;
    if (b.warps[w].arrived > 0 && (b.warps[w].mask >> (ctx->tid % kWarpSize) & 1u))
      fail(b, "simt: " + where(*ctx) + " returned while lanes of its warp wait in a shuffle naming it");
  } catch (const Aborted&) {
  } catch (const std::exception& e) {
    std::unique_lock<std::mutex> lk(b.mu);
    try {
      fail(b, std::string("simt: exception in ") + where(*ctx) + ": " + e.what());
    } catch (const Aborted&) {
    }
  }
  t_context = nullptr;
}

// The serial schedules' fibers: stacks kept between launches.
struct FiberSet {
  static constexpr size_t kStack = 256 * 1024;
  std::vector<ucontext_t> contexts;
  std::vector<std::unique_ptr<char[]>> stacks;
  Block* block = nullptr;
  std::vector<ThreadContext>* threads = nullptr;
  const std::function<void()>* body = nullptr;
  unsigned current = 0;
};

inline FiberSet& fiber_set() {
  static FiberSet set;
  return set;
}

inline void fiber_entry() {
  FiberSet& f = fiber_set();
  const unsigned t = f.current;
  thread_main(*f.block, &(*f.threads)[t], *f.body);
  f.block->finished[t] = 1;
}  // returns to uc_link, the scheduler

// Runs one block's fibers to completion: the next fiber in schedule order after the last one run (itself
// last) that has not finished and whose wait condition holds. After a failure every unfinished fiber is
// resumed once, to unwind.
inline void run_fibers(Block& b, std::vector<ThreadContext>& threads, const std::function<void()>& body) {
  FiberSet& f = fiber_set();
  const unsigned n = b.threads;
  if (f.contexts.size() < n) f.contexts.resize(n);
  while (f.stacks.size() < n) f.stacks.emplace_back(new char[FiberSet::kStack]);
  for (unsigned t = 0; t < n; ++t) {
    ucontext_t& c = f.contexts[t];
    getcontext(&c);
    c.uc_stack.ss_sp = f.stacks[t].get();
    c.uc_stack.ss_size = FiberSet::kStack;
    c.uc_link = &b.scheduler;
    makecontext(&c, fiber_entry, 0);
  }
  f.block = &b;
  f.threads = &threads;
  f.body = &body;
  b.fibers = &f.contexts;
  const bool forward = b.schedule == Schedule::kForward;
  unsigned last = forward ? n - 1 : 0;
  for (;;) {
    int next = -1;
    for (unsigned step = 1; step <= n && next < 0; ++step) {
      const unsigned t = forward ? (last + step) % n : (last + n - step) % n;
      if (b.finished[t]) continue;
      if (b.failed || !b.ready[t] || b.ready[t]()) next = static_cast<int>(t);
    }
    if (next < 0) {
      if (std::all_of(b.finished.begin(), b.finished.end(), [](char d) { return d != 0; })) break;
      b.failed = true;
      b.error = "simt: deadlock: every live thread waits at a __syncthreads or shuffle that cannot complete";
      continue;
    }
    last = static_cast<unsigned>(next);
    f.current = last;
    t_context = &threads[last];
    swapcontext(&b.scheduler, &f.contexts[last]);
  }
  t_context = nullptr;
}

inline std::mutex& launch_mutex() {
  static std::mutex mu;
  return mu;
}

}  // namespace detail

// kernel<<<grid, block>>>(args...): blocks in turn, each with `block` threads. Throws simt::Error.
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1)
    throw Error("simt: only 1-D grids and blocks are emulated");
  if (block.x == 0 || block.x > 1024) throw Error("simt: block size must be in [1, 1024], got " + std::to_string(block.x));
  if (grid.x == 0) throw Error("simt: empty grid");
  std::lock_guard<std::mutex> serialise(detail::launch_mutex());  // __shared__ is static: one block at a time
  const Schedule schedule = options().schedule;
  const std::function<void()> body = [&] { kernel(args...); };
  struct FloatEnvironment {  // flush-to-zero is set per thread: restore the launching thread's
#if defined(__x86_64__) || defined(__i386__)
    unsigned saved = _mm_getcsr();
    ~FloatEnvironment() { _mm_setcsr(saved); }
#elif defined(__aarch64__)
    uint64_t saved = [] { uint64_t v; asm volatile("mrs %0, fpcr" : "=r"(v)); return v; }();
    ~FloatEnvironment() { asm volatile("msr fpcr, %0" : : "r"(saved)); }
#endif
  } restore;
  for (unsigned bx = 0; bx < grid.x; ++bx) {
    detail::Block b(block.x, schedule);
    std::vector<detail::ThreadContext> contexts;
    contexts.reserve(block.x);
    for (unsigned t = 0; t < block.x; ++t) contexts.push_back(detail::ThreadContext{&b, t, dim3(t), dim3(bx), block, grid});
    if (schedule == Schedule::kParallel) {
      std::vector<std::thread> threads;
      threads.reserve(block.x);
      for (unsigned t = 0; t < block.x; ++t)
        threads.emplace_back(detail::thread_main, std::ref(b), &contexts[t], std::cref(body));
      for (auto& th : threads) th.join();
    } else {
      detail::run_fibers(b, contexts, body);
    }
    if (b.failed) throw Error(b.error);
  }
}

}  // namespace simt

#define threadIdx (::simt::detail::context().thread_idx)
#define blockIdx (::simt::detail::context().block_idx)
#define blockDim (::simt::detail::context().block_dim)
#define gridDim (::simt::detail::context().grid_dim)
constexpr int warpSize = ::simt::detail::kWarpSize;

inline void __syncthreads() { ::simt::detail::syncthreads(); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src) {
  return ::simt::detail::exchange(mask, v, src & (warpSize - 1), "__shfl_sync");
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  const int lane = static_cast<int>(::simt::detail::context().tid % warpSize);
  return ::simt::detail::exchange(mask, v, lane ^ lane_mask, "__shfl_xor_sync");
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta) {
  const int lane = static_cast<int>(::simt::detail::context().tid % warpSize);
  return ::simt::detail::exchange(mask, v, lane - static_cast<int>(delta), "__shfl_up_sync");
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
  const int lane = static_cast<int>(::simt::detail::context().tid % warpSize);
  return ::simt::detail::exchange(mask, v, lane + static_cast<int>(delta), "__shfl_down_sync");
}

template <typename T>
T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}

// Device max/min of two floats ignore a NaN operand (fmaxf/fminf); integers compare plainly.
template <typename T>
__forceinline__ T max(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) return std::fmax(a, b);
  else return a < b ? b : a;
}
template <typename T>
__forceinline__ T min(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) return std::fmin(a, b);
  else return b < a ? b : a;
}

inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
