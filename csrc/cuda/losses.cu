// CUDA registration of the fused losses. The kernels are in cuda/losses.cuh and the host code in
// cuda/losses_host.h (both shared with the SIMT test build); this file adds the device guard and the
// stream launcher.
#include <ATen/ATen.h>
// Not <ATen/cuda/CUDAContext.h>: it pulls in cuBLAS/cuSPARSE/cuSOLVER headers, which a bare CUDA
// toolkit may lack, and costs compile time; streams and launch checks come from c10.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common.h"
#include "cuda/launch_cuda.cuh"
#include "cuda/losses_host.h"

// No fast math: --use_fast_math flushes subnormals (targets, probabilities) to zero and swaps in the
// approximate __expf/__logf, changing the inf/NaN results the CPU kernel gives (a subnormal target makes
// the reverse KL infinite instead of finite). The kernels should be memory-bound (one warp per row, two
// transcendentals per element read), so the precise functions should cost little; not yet timed on a GPU.
// setup.py refuses fast-math flags (nvcc defines no macro a guard here could test).

namespace unlearnx {
namespace {

std::tuple<at::Tensor, at::Tensor> bikl_cuda_impl(const at::Tensor& logits, const at::Tensor& target,
                                                  double reverse_weight, bool with_grad) {
  c10::cuda::CUDAGuard device_guard(logits.device());
  return cuda::bikl_forward(cuda::CudaLaunch{}, logits, target, reverse_weight, with_grad);
}

at::Tensor bikl_loss_cuda(const at::Tensor& logits, const at::Tensor& target, double reverse_weight) {
  return std::get<0>(bikl_cuda_impl(logits, target, reverse_weight, false));
}

std::tuple<at::Tensor, at::Tensor> bikl_loss_fwd_cuda(const at::Tensor& logits, const at::Tensor& target,
                                                      double reverse_weight) {
  return bikl_cuda_impl(logits, target, reverse_weight, true);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_cuda_impl(const at::Tensor& forget_logits,
                                                             const at::Tensor& retain_logits, double temperature,
                                                             bool grad_forget, bool grad_retain) {
  c10::cuda::CUDAGuard device_guard(forget_logits.device());
  return cuda::scl_forward(cuda::CudaLaunch{}, forget_logits, retain_logits, temperature, grad_forget, grad_retain);
}

at::Tensor scl_loss_cuda(const at::Tensor& f, const at::Tensor& r, double temperature) {
  return std::get<0>(scl_cuda_impl(f, r, temperature, false, false));
}

}  // namespace

TORCH_LIBRARY_IMPL(unlearnx, CUDA, m) {
  m.impl("bikl_loss", &bikl_loss_cuda);
  m.impl("_bikl_loss_fwd", &bikl_loss_fwd_cuda);
  m.impl("_bikl_loss_backward", &bikl_loss_backward);
  m.impl("scl_loss", &scl_loss_cuda);
  m.impl("_scl_loss_fwd", &scl_cuda_impl);
  m.impl("_scl_loss_backward", &scl_loss_backward);
}

}  // namespace unlearnx
