// masked_reinit_ on CUDA: O(n) radix select (8 bits per pass, MSB first) on order-preserving
// integer keys. The select state (key prefix, rank still to find) stays on the device, so the
// passes need no host synchronisation. Ties at the threshold are taken in index order via a
// cumulative count (at::cumsum). Noise is drawn for every entry from the generator (Philox) and
// written where the mask is set.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
// Not <ATen/cuda/CUDAContext.h>: it pulls in cuBLAS/cuSPARSE/cuSOLVER headers, which a bare CUDA
// toolkit may lack, and costs compile time; streams and launch checks come from c10.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "common.h"

namespace unlearnx {
namespace {

constexpr int kThreads = 256;
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

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  const int64_t cap = static_cast<int64_t>(sms) * 8;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, cap)));
}

template <typename key_t>
void select_and_apply(at::Tensor& weight, const at::Tensor& scores, int64_t k, bool largest, const at::Tensor& noise,
                      at::Tensor& mask) {
  const int64_t n = weight.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned grid = grid_for(n);
  const auto long_opts = weight.options().dtype(at::kLong);
  at::Tensor keys = at::empty({n}, long_opts.dtype(sizeof(key_t) == 8 ? at::kLong : at::kInt));
  key_t* keys_ptr = reinterpret_cast<key_t*>(keys.mutable_data_ptr());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "masked_reinit_keys", [&] {
    make_keys_kernel<scalar_t, key_t><<<grid, kThreads, 0, stream>>>(scores.const_data_ptr<scalar_t>(), n, largest,
                                                                      keys_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  at::Tensor state = at::zeros({3}, long_opts);
  state.select(0, 2).fill_(k);
  uint64_t* state_ptr = reinterpret_cast<uint64_t*>(state.mutable_data_ptr());
  constexpr int passes = sizeof(key_t);
  at::Tensor hist = at::zeros({passes, kBins}, long_opts);
  auto* hist_ptr = reinterpret_cast<unsigned long long*>(hist.mutable_data_ptr());
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = 8 * (passes - 1 - pass);
    radix_histogram_kernel<key_t><<<grid, kThreads, 0, stream>>>(keys_ptr, n, state_ptr, shift,
                                                                  hist_ptr + pass * kBins);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    radix_pick_kernel<key_t><<<1, 1, 0, stream>>>(hist_ptr + pass * kBins, shift, state_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor is_tie = at::empty({n}, weight.options().dtype(at::kInt));
  tie_flags_kernel<key_t><<<grid, kThreads, 0, stream>>>(keys_ptr, n, state_ptr, is_tie.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor tie_rank = at::cumsum(is_tie, 0, at::kLong);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "masked_reinit_apply", [&] {
    using noise_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    apply_kernel<key_t, scalar_t, noise_t><<<grid, kThreads, 0, stream>>>(
        keys_ptr, tie_rank.const_data_ptr<int64_t>(), n, state_ptr, noise.const_data_ptr<noise_t>(),
        weight.mutable_data_ptr<scalar_t>(), mask.mutable_data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor masked_reinit_cuda(at::Tensor& weight, const at::Tensor& scores_in, double fraction, double std_dev,
                              bool largest, std::optional<int64_t> seed) {
  const int64_t k = check_reinit_inputs(weight, scores_in, fraction, std_dev);
  c10::cuda::CUDAGuard device_guard(weight.device());
  at::Tensor mask = at::zeros(weight.sizes(), weight.options().dtype(at::kBool));
  if (k == 0) return mask;
  std::optional<at::Generator> gen;
  if (seed.has_value()) {
    TORCH_CHECK_VALUE(*seed >= 0, "masked_reinit_: seed must be >= 0, got ", *seed);
    gen = at::make_generator<at::CUDAGeneratorImpl>(weight.device().index());
    gen->set_current_seed(static_cast<uint64_t>(*seed));
  }
  const auto noise_dtype = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor noise = at::empty({weight.numel()}, weight.options().dtype(noise_dtype)).normal_(0.0, std_dev, gen);
  const at::Tensor scores = scores_in.contiguous();
  if (scores.scalar_type() == at::kDouble)
    select_and_apply<uint64_t>(weight, scores, k, largest, noise, mask);
  else
    select_and_apply<uint32_t>(weight, scores, k, largest, noise, mask);
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(unlearnx, CUDA, m) {
  m.impl("masked_reinit_", &masked_reinit_cuda);
}

}  // namespace unlearnx
