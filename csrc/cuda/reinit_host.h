// Host side of masked_reinit_'s kernels (cuda/reinit.cuh), shared by the GPU build (cuda/reinit.cu) and
// the SIMT test build; see cuda/losses_host.h. The caller draws the k noise values (the generator is
// per device) in the weight's dtype, as the CPU kernel and the reference do, so that all three write
// the same values for the same generator state.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "common.h"
#include "cuda/reinit.cuh"

namespace unlearnx::cuda {

template <typename score_t, typename Launch>
void select_and_apply(const Launch& launch, at::Tensor& weight, const score_t* scores, int64_t k, bool largest,
                      const at::Tensor& noise, at::Tensor& mask) {
  using key_t = key_of_t<score_t>;
  const int64_t n = weight.numel();
  const Geometry geometry = grid_stride_geometry(n, launch.multiprocessors());
  const int64_t chunk = (n + geometry.grid - 1) / geometry.grid;
  const auto long_opts = weight.options().dtype(at::kLong);
  at::Tensor state = at::zeros({3}, long_opts);
  state.select(0, 2).fill_(k);
  uint64_t* state_ptr = reinterpret_cast<uint64_t*>(state.mutable_data_ptr());
  const uint64_t* state_in = state_ptr;
  constexpr int passes = sizeof(key_t);
  at::Tensor hist = at::zeros({passes, kBins}, long_opts);
  auto* hist_ptr = reinterpret_cast<unsigned long long*>(hist.mutable_data_ptr());
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = 8 * (passes - 1 - pass);
    launch(geometry, radix_histogram_kernel<score_t>, scores, n, largest, state_in, shift, hist_ptr + pass * kBins);
    launch(Geometry{1, 1}, radix_pick_kernel<key_t>, static_cast<const unsigned long long*>(hist_ptr + pass * kBins),
           shift, state_ptr);
  }
  at::Tensor counts = at::empty({geometry.grid, 2}, long_opts);
  launch(geometry, threshold_count_kernel<score_t>, scores, n, chunk, largest, state_in,
         counts.mutable_data_ptr<int64_t>());
  const at::Tensor offsets = (counts.cumsum(0) - counts).contiguous();  // exclusive, per block
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "masked_reinit_apply", [&] {
    launch(geometry, apply_kernel<score_t, scalar_t>, scores, n, chunk, largest, state_in,
           offsets.const_data_ptr<int64_t>(), noise.const_data_ptr<scalar_t>(), weight.mutable_data_ptr<scalar_t>(),
           mask.mutable_data_ptr<bool>());
  });
}

// Selects the k entries and writes noise[0..k) into them in index order; returns the mask.
template <typename Launch>
at::Tensor masked_reinit(const Launch& launch, at::Tensor& weight, const at::Tensor& scores_in, int64_t k,
                         bool largest, const at::Tensor& noise) {
  at::Tensor mask = at::zeros(weight.sizes(), weight.options().dtype(at::kBool));
  if (k == 0) return mask;
  TORCH_CHECK(noise.numel() == k && noise.scalar_type() == weight.scalar_type() && noise.is_contiguous(),
              "masked_reinit_: internal error: noise must be k contiguous values of the weight's dtype");
  const at::Tensor scores = scores_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "masked_reinit_select", [&] {
    select_and_apply<scalar_t>(launch, weight, scores.const_data_ptr<scalar_t>(), k, largest, noise, mask);
  });
  return mask;
}

}  // namespace unlearnx::cuda
