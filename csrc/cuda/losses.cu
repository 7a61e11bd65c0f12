// CUDA kernels of the fused losses: one warp per row, float accumulation for half/bfloat16/float
// (double for double), loss and gradient in the same launch; the per-row losses are reduced with
// at::sum (deterministic, no atomics). Launched on the current stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
// Not <ATen/cuda/CUDAContext.h>: it pulls in cuBLAS/cuSPARSE/cuSOLVER headers, which a bare CUDA
// toolkit may lack, and costs compile time; streams and launch checks come from c10.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common.h"

namespace unlearnx {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // 256 threads

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename acc_t>
__device__ __forceinline__ acc_t warp_max(acc_t v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// See cpu/losses.cpp for the formulas. grad may be null (loss only).
template <typename scalar_t, typename acc_t>
__global__ void bikl_rows_kernel(const scalar_t* __restrict__ logits, const scalar_t* __restrict__ target,
                                 acc_t w, int64_t B, int64_t C, acc_t inv_B, acc_t* __restrict__ row_loss,
                                 scalar_t* __restrict__ grad) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= B) return;  // whole warps exit together
  const scalar_t* z = logits + row * C;
  const scalar_t* t = target + row * C;
  acc_t m = -INFINITY;
  for (int64_t j = lane; j < C; j += kWarp) m = max(m, static_cast<acc_t>(z[j]));
  m = warp_max(m);
  acc_t sum_exp = 0;
  for (int64_t j = lane; j < C; j += kWarp) sum_exp += exp(static_cast<acc_t>(z[j]) - m);
  const acc_t log_sum = log(warp_sum(sum_exp)) + m;
  const bool reverse = w != acc_t(0);  // skipped, not multiplied by 0: a zero target makes it inf
  acc_t fwd = 0, rev = 0, sum_t = 0;
  for (int64_t j = lane; j < C; j += kWarp) {
    const acc_t ls = static_cast<acc_t>(z[j]) - log_sum, tj = static_cast<acc_t>(t[j]);
    const acc_t lt = log(tj), p = exp(ls);
    fwd += (tj == acc_t(0) ? acc_t(0) : tj * lt) - tj * ls;
    rev += reverse ? p * (ls - lt) : acc_t(0);
    sum_t += tj;
  }
  fwd = warp_sum(fwd);
  rev = warp_sum(rev);
  sum_t = warp_sum(sum_t);
  if (lane == 0) row_loss[row] = reverse ? fwd + w * rev : fwd;
  if (grad == nullptr) return;
  for (int64_t j = lane; j < C; j += kWarp) {
    const acc_t ls = static_cast<acc_t>(z[j]) - log_sum, tj = static_cast<acc_t>(t[j]);
    const acc_t lt = log(tj), p = exp(ls);
    const acc_t rterm = reverse ? w * p * (ls - lt - rev) : acc_t(0);
    grad[row * C + j] = static_cast<scalar_t>((p * sum_t - tj + rterm) * inv_B);
  }
}

std::tuple<at::Tensor, at::Tensor> bikl_cuda_impl(const at::Tensor& logits_in, const at::Tensor& target_in,
                                                  double reverse_weight, bool with_grad) {
  check_bikl_inputs(logits_in, target_in);
  c10::cuda::CUDAGuard device_guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const int64_t B = logits.size(0), C = logits.size(1);
  at::Tensor grad = with_grad ? at::empty_like(logits) : at::Tensor();
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bikl_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor row_loss = at::empty({B}, logits.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    const dim3 block(kWarp * kRowsPerBlock);
    const dim3 grid(static_cast<unsigned>((B + kRowsPerBlock - 1) / kRowsPerBlock));
    bikl_rows_kernel<scalar_t, acc_t><<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        logits.const_data_ptr<scalar_t>(), target.const_data_ptr<scalar_t>(), static_cast<acc_t>(reverse_weight),
        B, C, static_cast<acc_t>(1.0 / B), row_loss.mutable_data_ptr<acc_t>(),
        with_grad ? grad.mutable_data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    loss = row_loss.sum().div_(static_cast<double>(B)).to(logits.scalar_type());
  });
  return {loss, grad};
}

at::Tensor bikl_loss_cuda(const at::Tensor& logits, const at::Tensor& target, double reverse_weight) {
  return std::get<0>(bikl_cuda_impl(logits, target, reverse_weight, false));
}

std::tuple<at::Tensor, at::Tensor> bikl_loss_fwd_cuda(const at::Tensor& logits, const at::Tensor& target,
                                                      double reverse_weight) {
  return bikl_cuda_impl(logits, target, reverse_weight, true);
}

// One warp per row of S = F R^T (acc_t, [Bf, Br]); S is overwritten with G = (softmax(S_i/t) - 1/Br)/(Bf t).
template <typename acc_t>
__global__ void scl_rows_kernel(acc_t* __restrict__ S, int64_t Bf, int64_t Br, acc_t inv_t, acc_t g_scale,
                                bool write_grad, acc_t* __restrict__ row_loss) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= Bf) return;
  acc_t* s = S + row * Br;
  acc_t m = -INFINITY, sum_s = 0;
  for (int64_t j = lane; j < Br; j += kWarp) {
    const acc_t v = s[j] * inv_t;
    m = max(m, v);
    sum_s += v;
  }
  m = warp_max(m);
  sum_s = warp_sum(sum_s);
  acc_t sum_exp = 0;
  for (int64_t j = lane; j < Br; j += kWarp) sum_exp += exp(s[j] * inv_t - m);
  sum_exp = warp_sum(sum_exp);
  const acc_t lse = m + log(sum_exp);
  if (lane == 0) row_loss[row] = lse - sum_s / static_cast<acc_t>(Br);
  if (!write_grad) return;
  const acc_t inv_Br = acc_t(1) / static_cast<acc_t>(Br);
  for (int64_t j = lane; j < Br; j += kWarp) s[j] = (exp(s[j] * inv_t - lse) - inv_Br) * g_scale;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_cuda_impl(const at::Tensor& forget_in,
                                                             const at::Tensor& retain_in, double temperature,
                                                             bool grad_forget, bool grad_retain) {
  check_scl_inputs(forget_in, retain_in, temperature);
  c10::cuda::CUDAGuard device_guard(forget_in.device());
  const auto dtype = forget_in.scalar_type();
  // The [Bf, Br] similarity and its softmax live in the accumulation type (float for half/bf16).
  const auto acc_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor F = forget_in.to(acc_dtype).contiguous();
  const at::Tensor R = retain_in.to(acc_dtype).contiguous();
  const int64_t Bf = F.size(0), Br = R.size(0);
  at::Tensor S = at::mm(F, R.t());
  at::Tensor row_loss = at::empty({Bf}, F.options());
  const bool need_grad = grad_forget || grad_retain;
  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "scl_loss_cuda", [&] {
    const dim3 block(kWarp * kRowsPerBlock);
    const dim3 grid(static_cast<unsigned>((Bf + kRowsPerBlock - 1) / kRowsPerBlock));
    scl_rows_kernel<scalar_t><<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        S.mutable_data_ptr<scalar_t>(), Bf, Br, static_cast<scalar_t>(1.0 / temperature),
        static_cast<scalar_t>(1.0 / (static_cast<double>(Bf) * temperature)), need_grad,
        row_loss.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  at::Tensor loss = row_loss.sum().div_(static_cast<double>(Bf)).to(dtype);
  const auto out_opts = forget_in.options();
  at::Tensor dF = grad_forget ? at::mm(S, R).to(dtype) : at::empty({0}, out_opts);
  at::Tensor dR = grad_retain ? at::mm(S.t(), F).to(dtype) : at::empty({0}, out_opts);
  return {loss, dF, dR};
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
