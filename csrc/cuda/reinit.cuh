// Device code of masked_reinit_: O(n) radix select (8 bits per pass, MSB first) on order-preserving
// integer keys. Compiled by nvcc (cuda/reinit.cu) and, for the tests, on the host under the SIMT
// emulation.
#pragma once
#include "cuda/device.cuh"

namespace unlearnx::cuda {

constexpr int kBins = 256;

// Same order as order_key in common.h: -0.0 == +0.0, NaN above +inf, `largest` flips the order.
__device__ __forceinline__ uint32_t device_key(float x, bool largest) {
  uint32_t key;
  if (x != x) {
    key = 0xffffffffu;
  } else {
    if (x == 0.0f) x = 0.0f;
    const uint32_t bits = __float_as_uint(x);
    key = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  }
  return largest ? ~key : key;
}
__device__ __forceinline__ uint64_t device_key(double x, bool largest) {
  uint64_t key;
  if (x != x) {
    key = ~0ull;
  } else {
    if (x == 0.0) x = 0.0;
    const uint64_t bits = static_cast<uint64_t>(__double_as_longlong(x));
    key = (bits & (1ull << 63)) ? ~bits : (bits | (1ull << 63));
  }
  return largest ? ~key : key;
}

template <typename score_t, typename key_t>
__global__ void make_keys_kernel(const score_t* __restrict__ scores, int64_t n, bool largest, key_t* __restrict__ keys) {
  using in_t = std::conditional_t<sizeof(key_t) == 8, double, float>;  // half/bf16 widen exactly to float
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    keys[i] = device_key(static_cast<in_t>(scores[i]), largest);
}

// state[0] = key prefix found so far, state[1] = mask of its known bits, state[2] = 1-based rank of the
// wanted key among keys matching the prefix.
template <typename key_t>
__global__ void radix_histogram_kernel(const key_t* __restrict__ keys, int64_t n, const uint64_t* __restrict__ state,
                                       int shift, unsigned long long* __restrict__ hist) {
  __shared__ unsigned int local[kBins];
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  const key_t prefix = static_cast<key_t>(state[0]), known = static_cast<key_t>(state[1]);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const key_t key = keys[i];
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

template <typename key_t>
__global__ void tie_flags_kernel(const key_t* __restrict__ keys, int64_t n, const uint64_t* __restrict__ state,
                                 int32_t* __restrict__ is_tie) {
  const key_t threshold = static_cast<key_t>(state[0]);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    is_tie[i] = keys[i] == threshold;
}

// After the last pass state[0] is the k-th smallest key and state[2] how many of the keys equal to it
// are selected (the first ones in index order; tie_rank is their inclusive running count).
template <typename key_t, typename weight_t, typename noise_t>
__global__ void apply_kernel(const key_t* __restrict__ keys, const int64_t* __restrict__ tie_rank, int64_t n,
                             const uint64_t* __restrict__ state, const noise_t* __restrict__ noise,
                             weight_t* __restrict__ weight, bool* __restrict__ mask) {
  const key_t threshold = static_cast<key_t>(state[0]);
  const int64_t ties = static_cast<int64_t>(state[2]);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const key_t key = keys[i];
    const bool take = key < threshold || (key == threshold && tie_rank[i] <= ties);
    mask[i] = take;
    if (take) weight[i] = static_cast<weight_t>(noise[i]);
  }
}

}  // namespace unlearnx::cuda
