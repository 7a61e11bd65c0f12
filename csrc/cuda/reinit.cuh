// Device code of masked_reinit_: O(n) radix select (8 bits per pass, MSB first) on order-preserving
// integer keys (order_key.h, computed from the scores in every pass rather than stored), then one pass
// that writes the mask and the k fresh values in index order. Compiled by nvcc (cuda/reinit.cu) and,
// for the tests, on the host under the SIMT emulation.
//
// Temporaries: O(grid) counters and the k noise values; nothing per element.
#pragma once
#include "cuda/device.cuh"
#include "order_key.h"

namespace unlearnx::cuda {

constexpr int kBins = 256;

// half/bfloat16 widen exactly to float; the key has the width of that float.
template <typename score_t>
using key_float_t = std::conditional_t<std::is_same_v<score_t, double>, double, float>;
template <typename score_t>
using key_of_t = std::conditional_t<std::is_same_v<score_t, double>, uint64_t, uint32_t>;

template <typename score_t>
__device__ __forceinline__ key_of_t<score_t> score_key(const score_t* scores, int64_t i, bool largest) {
  return order_key<key_of_t<score_t>>(static_cast<key_float_t<score_t>>(scores[i]), largest);
}

// state[0] = key prefix found so far, state[1] = mask of its known bits, state[2] = 1-based rank of the
// wanted key among keys matching the prefix. After the last pass: state[0] is the k-th smallest key
// (the threshold) and state[2] how many keys equal to it are selected (the first ones in index order).
template <typename score_t>
__global__ void radix_histogram_kernel(const score_t* __restrict__ scores, int64_t n, bool largest,
                                       const uint64_t* __restrict__ state, int shift,
                                       unsigned long long* __restrict__ hist) {
  using key_t = key_of_t<score_t>;
  __shared__ unsigned int local[kBins];
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  const key_t prefix = static_cast<key_t>(state[0]), known = static_cast<key_t>(state[1]);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const key_t key = score_key(scores, i, largest);
    if ((key & known) == prefix) atomicAdd(&local[(key >> shift) & (kBins - 1)], 1u);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kBins; b += blockDim.x)
    if (local[b]) atomicAdd(&hist[b], static_cast<unsigned long long>(local[b]));
}

template <typename key_t>
__global__ void radix_pick_kernel(const unsigned long long* __restrict__ hist, int shift, uint64_t* state) {
  uint64_t rank = state[2], seen = 0;
  for (int b = 0; b < kBins; ++b) {
    if (seen + hist[b] >= rank) {
      state[0] |= static_cast<uint64_t>(static_cast<key_t>(b) << shift);
      state[1] |= static_cast<uint64_t>(static_cast<key_t>(kBins - 1) << shift);
      state[2] = rank - seen;
      return;
    }
    seen += hist[b];
  }
}

// Block b owns the contiguous chunk [b * chunk, (b + 1) * chunk) of the entries, so that "before in
// index order" is "in an earlier block, or earlier in the same block".
__device__ __forceinline__ void chunk_of_block(int64_t n, int64_t chunk, int64_t& begin, int64_t& end) {
  begin = static_cast<int64_t>(blockIdx.x) * chunk;
  end = begin + chunk < n ? begin + chunk : n;
}

// counts[2b] / counts[2b+1] = keys below / equal to the threshold in block b's chunk.
template <typename score_t>
__global__ void threshold_count_kernel(const score_t* __restrict__ scores, int64_t n, int64_t chunk, bool largest,
                                       const uint64_t* __restrict__ state, int64_t* __restrict__ counts) {
  using key_t = key_of_t<score_t>;
  __shared__ unsigned long long block_counts[2];
  if (threadIdx.x == 0) block_counts[0] = block_counts[1] = 0;
  __syncthreads();
  const key_t threshold = static_cast<key_t>(state[0]);
  int64_t begin, end;
  chunk_of_block(n, chunk, begin, end);
  unsigned long long below = 0, ties = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const key_t key = score_key(scores, i, largest);
    below += key < threshold;
    ties += key == threshold;
  }
  if (below) atomicAdd(&block_counts[0], below);
  if (ties) atomicAdd(&block_counts[1], ties);
  __syncthreads();
  if (threadIdx.x == 0) {
    counts[2 * blockIdx.x] = static_cast<int64_t>(block_counts[0]);
    counts[2 * blockIdx.x + 1] = static_cast<int64_t>(block_counts[1]);
  }
}

// Exclusive prefix sum over the block of a 64-bit value; `total` gets the block's sum. Every thread of
// the block must call it (two barriers). blockDim.x must be a multiple of the warp size.
__device__ __forceinline__ unsigned long long block_exclusive_scan(unsigned long long v,
                                                                   unsigned long long* warp_totals,
                                                                   unsigned long long& total) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  unsigned long long inclusive = v;
#pragma unroll
  for (int o = 1; o < kWarp; o *= 2) {
    const unsigned long long up = __shfl_up_sync(0xffffffffu, inclusive, o);
    if (lane >= o) inclusive += up;
  }
  if (lane == kWarp - 1) warp_totals[warp] = inclusive;
  __syncthreads();
  unsigned long long before = 0;
  total = 0;
  for (int w = 0; w < warps; ++w) {
    if (w < warp) before += warp_totals[w];
    total += warp_totals[w];
  }
  __syncthreads();  // warp_totals is rewritten by the next call
  return before + inclusive - v;
}

// offsets[2b] / offsets[2b+1] = keys below / equal to the threshold before block b's chunk. An entry is
// selected when below the threshold, or equal to it and among the first state[2] such entries; the
// r-th selected entry in index order (0-based) gets noise[r].
template <typename score_t, typename weight_t>
__global__ void apply_kernel(const score_t* __restrict__ scores, int64_t n, int64_t chunk, bool largest,
                             const uint64_t* __restrict__ state, const int64_t* __restrict__ offsets,
                             const weight_t* __restrict__ noise, weight_t* __restrict__ weight,
                             bool* __restrict__ mask) {
  using key_t = key_of_t<score_t>;
  __shared__ unsigned long long warp_totals[kThreads / kWarp];
  const key_t threshold = static_cast<key_t>(state[0]);
  const int64_t wanted_ties = static_cast<int64_t>(state[2]);
  int64_t begin, end;
  chunk_of_block(n, chunk, begin, end);
  int64_t below_before = offsets[2 * blockIdx.x], ties_before = offsets[2 * blockIdx.x + 1];
  // Tiles of blockDim entries; every thread runs every tile (the scan has barriers).
  for (int64_t base = begin; base < end; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    key_t key = threshold;
    const bool inside = i < end;
    if (inside) key = score_key(scores, i, largest);
    const bool below = inside && key < threshold, tie = inside && key == threshold;
    // Both counts in one scan: ties in the high 32 bits (a tile has at most blockDim of each).
    unsigned long long tile_total;
    const unsigned long long packed =
        block_exclusive_scan((static_cast<unsigned long long>(tie) << 32) | below, warp_totals, tile_total);
    const int64_t my_below = below_before + static_cast<int64_t>(packed & 0xffffffffu);
    const int64_t my_ties = ties_before + static_cast<int64_t>(packed >> 32);
    const bool take = below || (tie && my_ties < wanted_ties);
    if (inside) {
      mask[i] = take;
      if (take) weight[i] = noise[my_below + (my_ties < wanted_ties ? my_ties : wanted_ties)];
    }
    below_before += static_cast<int64_t>(tile_total & 0xffffffffu);
    ties_before += static_cast<int64_t>(tile_total >> 32);
  }
}

}  // namespace unlearnx::cuda
