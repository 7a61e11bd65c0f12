// Host side of masked_reinit_'s kernels (cuda/reinit.cuh), shared by the GPU build (cuda/reinit.cu) and
// the SIMT test build; see cuda/losses_host.h. The caller draws the noise (its generator is per device).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "common.h"
#include "cuda/reinit.cuh"

namespace unlearnx::cuda {

template <typename key_t, typename Launch>
void select_and_apply(const Launch& launch, at::Tensor& weight, const at::Tensor& scores, int64_t k, bool largest,
                      const at::Tensor& noise, at::Tensor& mask) {
  const int64_t n = weight.numel();
  const Geometry geometry = grid_stride_geometry(n, launch.multiprocessors());
  const auto long_opts = weight.options().dtype(at::kLong);
  at::Tensor keys = at::empty({n}, long_opts.dtype(sizeof(key_t) == 8 ? at::kLong : at::kInt));
  key_t* keys_ptr = reinterpret_cast<key_t*>(keys.mutable_data_ptr());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "masked_reinit_keys", [&] {
    launch(geometry, make_keys_kernel<scalar_t, key_t>, scores.const_data_ptr<scalar_t>(), n, largest, keys_ptr);
  });
  at::Tensor state = at::zeros({3}, long_opts);
  state.select(0, 2).fill_(k);
  uint64_t* state_ptr = reinterpret_cast<uint64_t*>(state.mutable_data_ptr());
  constexpr int passes = sizeof(key_t);
  at::Tensor hist = at::zeros({passes, kBins}, long_opts);
  auto* hist_ptr = reinterpret_cast<unsigned long long*>(hist.mutable_data_ptr());
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = 8 * (passes - 1 - pass);
    launch(geometry, radix_histogram_kernel<key_t>, static_cast<const key_t*>(keys_ptr), n,
           static_cast<const uint64_t*>(state_ptr), shift, hist_ptr + pass * kBins);
    launch(Geometry{1, 1}, radix_pick_kernel<key_t>, static_cast<const unsigned long long*>(hist_ptr + pass * kBins),
           shift, state_ptr);
  }
  at::Tensor is_tie = at::empty({n}, weight.options().dtype(at::kInt));
  launch(geometry, tie_flags_kernel<key_t>, static_cast<const key_t*>(keys_ptr), n,
         static_cast<const uint64_t*>(state_ptr), is_tie.mutable_data_ptr<int32_t>());
  const at::Tensor tie_rank = at::cumsum(is_tie, 0, at::kLong);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "masked_reinit_apply", [&] {
    using noise_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    launch(geometry, apply_kernel<key_t, scalar_t, noise_t>, static_cast<const key_t*>(keys_ptr),
           tie_rank.const_data_ptr<int64_t>(), n, static_cast<const uint64_t*>(state_ptr),
           noise.const_data_ptr<noise_t>(), weight.mutable_data_ptr<scalar_t>(), mask.mutable_data_ptr<bool>());
  });
}

// Selects and rewrites in place; `noise` holds the values to write (dtype: see masked_reinit_noise).
template <typename Launch>
at::Tensor masked_reinit(const Launch& launch, at::Tensor& weight, const at::Tensor& scores_in, int64_t k,
                         bool largest, const at::Tensor& noise) {
  at::Tensor mask = at::zeros(weight.sizes(), weight.options().dtype(at::kBool));
  if (k == 0) return mask;
  const at::Tensor scores = scores_in.contiguous();
  if (scores.scalar_type() == at::kDouble)
    select_and_apply<uint64_t>(launch, weight, scores, k, largest, noise, mask);
  else
    select_and_apply<uint32_t>(launch, weight, scores, k, largest, noise, mask);
  return mask;
}

// The noise to draw: one value per entry, float (double for double weights).
inline at::Tensor masked_reinit_noise_buffer(const at::Tensor& weight, int64_t /*k*/) {
  const auto noise_dtype = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return at::empty({weight.numel()}, weight.options().dtype(noise_dtype));
}

}  // namespace unlearnx::cuda
