// Host side of the fused-loss kernels (cuda/losses.cuh): buffers, dispatch, launch geometry and the
// final reductions, written once for the GPU build (cuda/losses.cu, launching with <<<>>> on the current
// stream) and the SIMT test build (csrc/simt/simt_ops.cpp, launching under emulation on CPU tensors).
// `launch(geometry, kernel, args...)` is the only difference. ATen only; nothing from CUDA.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <tuple>

#include "common.h"
#include "cuda/losses.cuh"

namespace unlearnx::cuda {

// The per-row losses are reduced with at::sum (deterministic, no atomics).
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> bikl_forward(const Launch& launch, const at::Tensor& logits_in,
                                                const at::Tensor& target_in, double reverse_weight, bool with_grad) {
  check_bikl_inputs(logits_in, target_in);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const int64_t B = logits.size(0), C = logits.size(1);
  at::Tensor grad = with_grad ? at::empty_like(logits) : at::Tensor();
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bikl_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor row_loss = at::empty({B}, logits.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    launch(rows_geometry(B), bikl_rows_kernel<scalar_t, acc_t>, logits.const_data_ptr<scalar_t>(),
           target.const_data_ptr<scalar_t>(), static_cast<acc_t>(reverse_weight), B, C,
           static_cast<acc_t>(1.0 / B), row_loss.mutable_data_ptr<acc_t>(),
           with_grad ? grad.mutable_data_ptr<scalar_t>() : static_cast<scalar_t*>(nullptr));
    loss = row_loss.sum().div_(static_cast<double>(B)).to(logits.scalar_type());
  });
  return {loss, grad};
}

template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_forward(const Launch& launch, const at::Tensor& forget_in,
                                                           const at::Tensor& retain_in, double temperature,
                                                           bool grad_forget, bool grad_retain) {
  check_scl_inputs(forget_in, retain_in, temperature);
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
    launch(rows_geometry(Bf), scl_rows_kernel<scalar_t>, S.mutable_data_ptr<scalar_t>(), Bf, Br,
           static_cast<scalar_t>(1.0 / temperature),
           static_cast<scalar_t>(1.0 / (static_cast<double>(Bf) * temperature)), need_grad,
           row_loss.mutable_data_ptr<scalar_t>());
  });
  at::Tensor loss = row_loss.sum().div_(static_cast<double>(Bf)).to(dtype);
  const auto out_opts = forget_in.options();
  at::Tensor dF = grad_forget ? at::mm(S, R).to(dtype) : at::empty({0}, out_opts);
  at::Tensor dR = grad_retain ? at::mm(S.t(), F).to(dtype) : at::empty({0}, out_opts);
  return {loss, dF, dR};
}

}  // namespace unlearnx::cuda
