// The SIMT test extension: the CUDA kernels of csrc/cuda/*.cuh and their shared host code
// (csrc/cuda/*_host.h), run on CPU tensors under the emulation of simt.h with the launch geometry of
// the GPU build. Ops live in torch.ops.unlearnx_simt; tests/simt_build.py builds and loads it.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <Python.h>
#include <torch/library.h>

#include <optional>

#include "simt/simt.h"  // after ATen, before the kernels

#include "common.h"
#include "cuda/losses_host.h"
#include "cuda/reinit_host.h"

extern "C" PyObject* PyInit_unlearnx_simt(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "unlearnx_simt", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

namespace unlearnx::simt_test {
namespace {

struct EmulatedLaunch {
  int multiprocessors() const { return simt::options().multiprocessors; }
  template <typename Kernel, typename... Args>
  void operator()(cuda::Geometry g, Kernel kernel, Args... args) const {
    try {
      simt::launch(dim3(g.grid), dim3(g.block), kernel, args...);
    } catch (const simt::Error& e) {
      TORCH_CHECK(false, e.what());
    }
  }
};

void set_options(const std::string& schedule, bool flush_to_zero, int64_t multiprocessors) {
  auto& o = simt::options();
  if (schedule == "parallel") o.schedule = simt::Schedule::kParallel;
  else if (schedule == "forward") o.schedule = simt::Schedule::kForward;
  else if (schedule == "reverse") o.schedule = simt::Schedule::kReverse;
  else TORCH_CHECK_VALUE(false, "simt: schedule must be parallel, forward or reverse, got ", schedule);
  o.flush_to_zero = flush_to_zero;
  o.multiprocessors = static_cast<int>(multiprocessors);
}

std::tuple<at::Tensor, at::Tensor> bikl_fwd(const at::Tensor& logits, const at::Tensor& target, double w,
                                            bool with_grad) {
  return cuda::bikl_forward(EmulatedLaunch{}, logits, target, w, with_grad);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_fwd(const at::Tensor& f, const at::Tensor& r, double t, bool gf,
                                                       bool gr) {
  return cuda::scl_forward(EmulatedLaunch{}, f, r, t, gf, gr);
}

// The backward of the fused losses, as autograd.cpp composes it: scale, then round to the input's dtype.
at::Tensor grad_input(const at::Tensor& grad_output, const at::Tensor& saved_grad, const at::Tensor& input) {
  return to_input_dtype(bikl_loss_backward(grad_output, saved_grad), input);
}

// As masked_reinit_cuda (cuda/reinit.cu), with the CPU generator.
at::Tensor masked_reinit(at::Tensor& weight, const at::Tensor& scores, double fraction, double std_dev, bool largest,
                         int64_t seed) {
  const int64_t k = check_reinit_inputs(weight, scores, fraction, std_dev);
  if (k == 0) return at::zeros(weight.sizes(), weight.options().dtype(at::kBool));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
  const at::Tensor noise = at::empty({k}, weight.options()).normal_(0.0, std_dev, gen);
  return cuda::masked_reinit(EmulatedLaunch{}, weight, scores, k, largest, noise);
}

// Toy kernels that prove the harness reports what a GPU would not: a block reversal through shared
// memory (with and without its __syncthreads) and a warp sum (full mask, half-warp mask, exited lanes).
template <bool kSync>
__global__ void toy_reverse_kernel(const float* in, float* out) {
  __shared__ float s[1024];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x;
  s[threadIdx.x] = in[base + threadIdx.x];
  if (kSync) __syncthreads();
  out[base + threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

template <int kVariant>  // 0 correct, 1 half-warp mask, 2 upper half-warp returned early
__global__ void toy_warp_sum_kernel(const float* in, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x % 32;
  if (kVariant == 2 && lane >= 16) return;
  float v = in[i];
  const unsigned mask = kVariant == 1 ? 0x0000ffffu : 0xffffffffu;
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(mask, v, o);
  out[i] = v;
}

at::Tensor toy(const std::string& name, const at::Tensor& in_, int64_t block) {
  const at::Tensor in = in_.to(at::kFloat).contiguous();
  TORCH_CHECK_VALUE(in.numel() % block == 0, "toy: numel must be a multiple of the block size");
  at::Tensor out = at::full_like(in, -1.0f);
  const cuda::Geometry g{static_cast<unsigned>(in.numel() / block), static_cast<unsigned>(block)};
  const float* src = in.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  EmulatedLaunch launch;
  if (name == "reverse") launch(g, toy_reverse_kernel<true>, src, dst);
  else if (name == "reverse_missing_sync") launch(g, toy_reverse_kernel<false>, src, dst);
  else if (name == "warp_sum") launch(g, toy_warp_sum_kernel<0>, src, dst);
  else if (name == "warp_sum_half_mask") launch(g, toy_warp_sum_kernel<1>, src, dst);
  else if (name == "warp_sum_exited_lanes") launch(g, toy_warp_sum_kernel<2>, src, dst);
  else TORCH_CHECK_VALUE(false, "toy: unknown kernel ", name);
  return out;
}

}  // namespace
}  // namespace unlearnx::simt_test

TORCH_LIBRARY(unlearnx_simt, m) {
  using namespace unlearnx::simt_test;
  m.def("set_options(str schedule, bool flush_to_zero, int multiprocessors) -> ()", &set_options);
  m.def("bikl_fwd(Tensor logits, Tensor target, float reverse_weight, bool with_grad) -> (Tensor, Tensor)", &bikl_fwd);
  m.def("scl_fwd(Tensor forget_logits, Tensor retain_logits, float temperature, bool grad_forget, bool grad_retain) "
        "-> (Tensor, Tensor, Tensor)", &scl_fwd);
  m.def("masked_reinit_(Tensor(a!) weight, Tensor scores, float fraction, float std, bool largest, int seed) -> Tensor",
        &masked_reinit);
  m.def("grad_input(Tensor grad_output, Tensor saved_grad, Tensor input) -> Tensor", &grad_input);
  m.def("toy(str name, Tensor input, int block) -> Tensor", &toy);
}
