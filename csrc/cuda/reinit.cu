// CUDA registration of masked_reinit_. The kernels are in cuda/reinit.cuh and the host code in
// cuda/reinit_host.h (both shared with the SIMT test build); this file adds the device guard, the
// CUDA generator and the stream launcher.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

// No fast math (setup.py refuses it): the selection must not depend on flush-to-zero. The keys are built
// from bit patterns (order_key.h), so they would not, but nothing here needs the fast intrinsics.

#include "common.h"
#include "cuda/launch_cuda.cuh"
#include "cuda/reinit_host.h"

namespace unlearnx {
namespace {

at::Tensor masked_reinit_cuda(at::Tensor& weight, const at::Tensor& scores, double fraction, double std_dev,
                              bool largest, std::optional<int64_t> seed) {
  const int64_t k = check_reinit_inputs(weight, scores, fraction, std_dev);
  c10::cuda::CUDAGuard device_guard(weight.device());
  if (k == 0) return at::zeros(weight.sizes(), weight.options().dtype(at::kBool));
  std::optional<at::Generator> gen;
  if (seed.has_value()) {
    TORCH_CHECK_VALUE(*seed >= 0, "masked_reinit_: seed must be >= 0, got ", *seed);
    gen = at::make_generator<at::CUDAGeneratorImpl>(weight.device().index());
    gen->set_current_seed(static_cast<uint64_t>(*seed));
  }
  // k draws in the weight's dtype, as the CPU kernel and the reference draw them.
  const at::Tensor noise = at::empty({k}, weight.options()).normal_(0.0, std_dev, gen);
  return cuda::masked_reinit(cuda::CudaLaunch{}, weight, scores, k, largest, noise);
}

}  // namespace

TORCH_LIBRARY_IMPL(unlearnx, CUDA, m) {
  m.impl("masked_reinit_", &masked_reinit_cuda);
}

}  // namespace unlearnx
