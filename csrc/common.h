// Helpers shared by the CPU and CUDA kernels: input checks and the backward scaling.
#pragma once
#include <ATen/ATen.h>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>

#include "order_key.h"

namespace unlearnx {

// Checks the dispatcher cannot make for us; the Python wrappers check first with friendlier
// messages, these guard direct torch.ops.unlearnx calls.
inline void check_bikl_inputs(const at::Tensor& logits, const at::Tensor& target) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "bikl_loss: logits must be 2-D [batch, classes], got ", logits.sizes());
  TORCH_CHECK_VALUE(target.sizes() == logits.sizes(), "bikl_loss: target must have the shape of logits ",
                    logits.sizes(), ", got ", target.sizes());
  TORCH_CHECK_VALUE(target.scalar_type() == logits.scalar_type(), "bikl_loss: target dtype ",
                    target.scalar_type(), " differs from logits dtype ", logits.scalar_type());
  TORCH_CHECK_VALUE(target.device() == logits.device(), "bikl_loss: target is on ", target.device(),
                    ", logits on ", logits.device());
  TORCH_CHECK_VALUE(logits.size(0) > 0 && logits.size(1) > 0, "bikl_loss: logits must be non-empty, got ",
                    logits.sizes());
}

inline void check_scl_inputs(const at::Tensor& f, const at::Tensor& r, double temperature) {
  TORCH_CHECK_VALUE(f.dim() == 2, "scl_loss: forget_logits must be 2-D [batch, classes], got ", f.sizes());
  TORCH_CHECK_VALUE(r.dim() == 2, "scl_loss: retain_logits must be 2-D [batch, classes], got ", r.sizes());
  TORCH_CHECK_VALUE(f.size(1) == r.size(1), "scl_loss: forget_logits has ", f.size(1),
                    " classes but retain_logits has ", r.size(1));
  TORCH_CHECK_VALUE(f.size(0) > 0 && r.size(0) > 0, "scl_loss: both batches must be non-empty");
  TORCH_CHECK_VALUE(f.scalar_type() == r.scalar_type(), "scl_loss: retain_logits dtype ", r.scalar_type(),
                    " differs from forget_logits dtype ", f.scalar_type());
  TORCH_CHECK_VALUE(f.device() == r.device(), "scl_loss: retain_logits is on ", r.device(),
                    ", forget_logits on ", f.device());
  TORCH_CHECK_VALUE(temperature > 0, "scl_loss: temperature must be > 0, got ", temperature);
}

inline int64_t check_reinit_inputs(const at::Tensor& weight, const at::Tensor& scores, double fraction,
                                   double std_dev) {
  TORCH_CHECK_VALUE(scores.sizes() == weight.sizes(), "masked_reinit_: scores must have the shape of weight ",
                    weight.sizes(), ", got ", scores.sizes());
  TORCH_CHECK_VALUE(scores.device() == weight.device(), "masked_reinit_: scores is on ", scores.device(),
                    ", weight on ", weight.device());
  TORCH_CHECK_VALUE(at::isFloatingType(weight.scalar_type()), "masked_reinit_: weight must be floating point");
  TORCH_CHECK_VALUE(at::isFloatingType(scores.scalar_type()), "masked_reinit_: scores must be floating point");
  TORCH_CHECK_VALUE(weight.is_contiguous(), "masked_reinit_: weight must be contiguous");
  TORCH_CHECK_VALUE(fraction >= 0.0 && fraction <= 1.0, "masked_reinit_: fraction must be in [0, 1], got ",
                    fraction);
  TORCH_CHECK_VALUE(std_dev >= 0.0, "masked_reinit_: std must be >= 0, got ", std_dev);
  // round-half-even on the double product, as Python's round(fraction * numel).
  return static_cast<int64_t>(std::nearbyint(fraction * static_cast<double>(weight.numel())));
}

// The backward of every fused loss: the gradient was computed in the forward, scale it.
inline at::Tensor scale_saved_grad(const at::Tensor& grad_output, const at::Tensor& saved_grad) {
  return at::mul(saved_grad, grad_output);
}

// The saved gradients of half/bfloat16 inputs stay in float32 (their accumulation type) until scaled by
// grad_output; the autograd kernels then round once to the input's dtype with this.
inline at::Tensor to_input_dtype(const at::Tensor& grad, const at::Tensor& input) {
  // No numel()/sizes() here: under torch.compile the sizes are symbolic.
  return grad.defined() && grad.scalar_type() != input.scalar_type() ? grad.to(input.scalar_type()) : grad;
}

inline at::Tensor bikl_loss_backward(const at::Tensor& grad_output, const at::Tensor& grad_logits) {
  return scale_saved_grad(grad_output, grad_logits);
}

inline std::tuple<at::Tensor, at::Tensor> scl_loss_backward(const at::Tensor& grad_output,
                                                            const at::Tensor& grad_forget,
                                                            const at::Tensor& grad_retain) {
  // Empty [0] placeholders (gradient not requested) stay empty; a fresh tensor keeps outputs unaliased.
  auto scale = [&](const at::Tensor& g) { return g.numel() ? scale_saved_grad(grad_output, g) : at::empty_like(g); };
  return {scale(grad_forget), scale(grad_retain)};
}

}  // namespace unlearnx
