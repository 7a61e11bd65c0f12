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

// The per-row losses are reduced with at::sum (deterministic, no atomics). The loss and the saved gradient
// are in the accumulation dtype: float32 for half/bfloat16 inputs, as eager autocast returns these losses,
// and so that the gradient is rounded to the input's dtype only after grad_output scales it (autograd.cpp).
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> bikl_forward(const Launch& launch, const at::Tensor& logits_in,
                                                const at::Tensor& target_in, double reverse_weight, bool with_grad) {
  check_bikl_inputs(logits_in, target_in);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const int64_t B = logits.size(0), C = logits.size(1);
  at::Tensor grad, loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bikl_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_options = logits.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    at::Tensor row_loss = at::empty({B}, acc_options);
    if (with_grad) grad = at::empty({B, C}, acc_options);
    launch(rows_geometry(B), bikl_rows_kernel<scalar_t, acc_t>, logits.const_data_ptr<scalar_t>(),
           target.const_data_ptr<scalar_t>(), static_cast<acc_t>(reverse_weight), B, C,
           static_cast<acc_t>(1.0 / B), row_loss.mutable_data_ptr<acc_t>(),
           with_grad ? grad.mutable_data_ptr<acc_t>() : static_cast<acc_t*>(nullptr));
    loss = row_loss.sum().div_(static_cast<double>(B));
  });
  return {loss, grad};
}

template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_forward(const Launch& launch, const at::Tensor& forget_in,
                                                           const at::Tensor& retain_in, double temperature,
                                                           bool grad_forget, bool grad_retain) {
  check_scl_inputs(forget_in, retain_in, temperature);
  // The [Bf, Br] similarity and its softmax live in the accumulation type (float for half/bf16).
  const auto acc_dtype = forget_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
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
  at::Tensor loss = row_loss.sum().div_(static_cast<double>(Bf));
  at::Tensor dF = grad_forget ? at::mm(S, R) : at::empty({0}, F.options());
  at::Tensor dR = grad_retain ? at::mm(S.t(), F) : at::empty({0}, F.options());
  return {loss, dF, dR};
}

}  // namespace unlearnx::cuda
