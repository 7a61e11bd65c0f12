// CPU kernels of the fused losses. At the competition's shapes (B = 64..512 rows, C = 10 classes)
// the arithmetic is tiny and fixed costs dominate, so each loss is: one pass over the rows (max,
// shift), the transcendentals of the whole batch in one vectorised ATen call (at::exp_ / at::log
// pick AVX2/AVX-512 at run time; this file is compiled for the baseline ISA), and one pass that
// reduces the rows and writes the gradient. The gradient is computed in the forward because it
// needs the same softmax; the backward op only scales it. Accumulation is float for float inputs,
// double for double; row reductions are `omp simd` so they vectorise without -ffast-math.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"

namespace unlearnx {
namespace {

// Rows per parallel task: below ~32k elements the OpenMP fork costs more than the work.
inline int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1)); }

// Per row i (z = logits, t = target, ls = log_softmax(z), p = exp(ls), lt = log t):
//   forward  F_i = sum_j xlogy(t,t) - t*ls            (KL(t || p), the notebooks' kl_div(ls, t))
//   reverse  R_i = sum_j p*(ls - lt)                  (KL(p || t), kl_div(lt, p))
//   loss     = sum_i (F_i + w*R_i) / B
//   dloss/dz = (p*sum(t) - t + w*p*(ls - lt - R_i)) / B
template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> bikl_typed(const at::Tensor& logits, const at::Tensor& target,
                                              double reverse_weight, bool with_grad) {
  const int64_t B = logits.size(0), C = logits.size(1);
  const scalar_t* z = logits.const_data_ptr<scalar_t>();
  const scalar_t* t = target.const_data_ptr<scalar_t>();
  // shifted = z - rowmax, then exp in place; log_t = log(target).
  at::Tensor shifted = at::empty({B, C}, logits.options());
  at::Tensor log_t = at::log(target);
  scalar_t* e = shifted.mutable_data_ptr<scalar_t>();
  std::vector<scalar_t> row_max(B);
  at::parallel_for(0, B, row_grain(C), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* zi = z + i * C;
      scalar_t m = zi[0];
#pragma omp simd reduction(max : m)
      for (int64_t j = 1; j < C; ++j) m = std::max(m, zi[j]);
      scalar_t* ei = e + i * C;
#pragma omp simd
      for (int64_t j = 0; j < C; ++j) ei[j] = zi[j] - m;
    }
  });
  // Keep the shift: ls = shifted - log(sum exp) needs it, exp overwrites the buffer.
  at::Tensor exps = at::exp(shifted);
  const scalar_t* s_all = shifted.const_data_ptr<scalar_t>();
  const scalar_t* ex_all = exps.const_data_ptr<scalar_t>();
  const scalar_t* lt_all = log_t.const_data_ptr<scalar_t>();
  const scalar_t w = static_cast<scalar_t>(reverse_weight);
  // With w == 0 the reverse term is skipped, not multiplied by 0: a zero target entry makes it inf.
  const bool reverse = reverse_weight != 0.0;
  const scalar_t scale = static_cast<scalar_t>(1.0 / B);
  at::Tensor grad = with_grad ? at::empty({B, C}, logits.options()) : at::Tensor();
  scalar_t* g_all = with_grad ? grad.mutable_data_ptr<scalar_t>() : nullptr;
  std::vector<double> row_loss(B);
  at::parallel_for(0, B, row_grain(C), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* s = s_all + i * C;
      const scalar_t* ex = ex_all + i * C;
      const scalar_t* lt = lt_all + i * C;
      const scalar_t* ti = t + i * C;
      scalar_t sum_exp = 0;
#pragma omp simd reduction(+ : sum_exp)
      for (int64_t j = 0; j < C; ++j) sum_exp += ex[j];
      const scalar_t log_sum = std::log(sum_exp), inv_sum = scalar_t(1) / sum_exp;
      scalar_t fwd = 0, rev = 0, sum_t = 0;
#pragma omp simd reduction(+ : fwd, rev, sum_t)
      for (int64_t j = 0; j < C; ++j) {
        const scalar_t ls = s[j] - log_sum, p = ex[j] * inv_sum, tj = ti[j];
        const scalar_t xlogx = tj == scalar_t(0) ? scalar_t(0) : tj * lt[j];  // xlogy(t, t)
        fwd += xlogx - tj * ls;
        rev += reverse ? p * (ls - lt[j]) : scalar_t(0);
        sum_t += tj;
      }
      row_loss[i] = static_cast<double>(fwd) + (reverse ? static_cast<double>(w) * static_cast<double>(rev) : 0.0);
      if (g_all != nullptr) {
        scalar_t* g = g_all + i * C;
#pragma omp simd
        for (int64_t j = 0; j < C; ++j) {
          const scalar_t ls = s[j] - log_sum, p = ex[j] * inv_sum;
          g[j] = (p * sum_t - ti[j] + (reverse ? w * p * (ls - lt[j] - rev) : scalar_t(0))) * scale;
        }
      }
    }
  });
  double total = 0;  // summed in row order: the same result for any thread count
  for (double v : row_loss) total += v;
  at::Tensor loss = at::empty({}, logits.options());
  *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total / B);
  return {loss, grad};
}

std::tuple<at::Tensor, at::Tensor> bikl_cpu_impl(const at::Tensor& logits, const at::Tensor& target,
                                                 double reverse_weight, bool with_grad) {
  check_bikl_inputs(logits, target);
  TORCH_CHECK_VALUE(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
                    "bikl_loss: CPU supports float32 and float64, got ", logits.scalar_type());
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "bikl_loss_cpu", [&] {
    out = bikl_typed<scalar_t>(logits.contiguous(), target.contiguous(), reverse_weight, with_grad);
  });
  return out;
}

at::Tensor bikl_loss_cpu(const at::Tensor& logits, const at::Tensor& target, double reverse_weight) {
  return std::get<0>(bikl_cpu_impl(logits, target, reverse_weight, /*with_grad=*/false));
}

std::tuple<at::Tensor, at::Tensor> bikl_loss_fwd_cpu(const at::Tensor& logits, const at::Tensor& target,
                                                     double reverse_weight) {
  return bikl_cpu_impl(logits, target, reverse_weight, /*with_grad=*/true);
}

// S = F R^T / t ([B_f, B_r]); loss = mean_i (LSE(S_i) - mean_j S_ij). The S buffer becomes, in place,
// G = dL/dS / t = (softmax(S_i) - 1/B_r) / (B_f t), so that dF = G R and dR = G^T F (BLAS).
template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_typed(const at::Tensor& F, const at::Tensor& R, double temperature,
                                                         bool grad_forget, bool grad_retain) {
  const int64_t Bf = F.size(0), Br = R.size(0);
  at::Tensor S = at::mm(F, R.t());
  scalar_t* s_all = S.mutable_data_ptr<scalar_t>();
  const scalar_t inv_t = static_cast<scalar_t>(1.0 / temperature);
  std::vector<scalar_t> row_max(Bf), row_sum(Bf);
  at::parallel_for(0, Bf, row_grain(Br), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* s = s_all + i * Br;
      scalar_t m = s[0], sum_s = 0;
#pragma omp simd reduction(max : m) reduction(+ : sum_s)
      for (int64_t j = 0; j < Br; ++j) {
        m = std::max(m, s[j]);
        sum_s += s[j];
      }
      m *= inv_t;  // t > 0, so max(S)/t = max(S/t)
#pragma omp simd
      for (int64_t j = 0; j < Br; ++j) s[j] = s[j] * inv_t - m;
      row_max[i] = m;
      row_sum[i] = sum_s * inv_t;
    }
  });
  S.exp_();  // vectorised ATen kernel
  const bool need_grad = grad_forget || grad_retain;
  const scalar_t inv_Br = static_cast<scalar_t>(1.0 / Br);
  const scalar_t g_scale = static_cast<scalar_t>(1.0 / (static_cast<double>(Bf) * temperature));
  std::vector<double> row_loss(Bf);
  at::parallel_for(0, Bf, row_grain(Br), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* ex = s_all + i * Br;
      scalar_t sum_exp = 0;
#pragma omp simd reduction(+ : sum_exp)
      for (int64_t j = 0; j < Br; ++j) sum_exp += ex[j];
      row_loss[i] = static_cast<double>(row_max[i]) + std::log(static_cast<double>(sum_exp)) -
                    static_cast<double>(row_sum[i]) / Br;
      if (need_grad) {
        const scalar_t inv_sum = scalar_t(1) / sum_exp;
#pragma omp simd
        for (int64_t j = 0; j < Br; ++j) ex[j] = (ex[j] * inv_sum - inv_Br) * g_scale;
      }
    }
  });
  double total = 0;
  for (double v : row_loss) total += v;
  at::Tensor loss = at::empty({}, F.options());
  *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total / Bf);
  at::Tensor dF = grad_forget ? at::mm(S, R) : at::empty({0}, F.options());
  at::Tensor dR = grad_retain ? at::mm(S.t(), F) : at::empty({0}, F.options());
  return {loss, dF, dR};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_cpu_impl(const at::Tensor& forget_logits,
                                                            const at::Tensor& retain_logits, double temperature,
                                                            bool grad_forget, bool grad_retain) {
  check_scl_inputs(forget_logits, retain_logits, temperature);
  TORCH_CHECK_VALUE(forget_logits.scalar_type() == at::kFloat || forget_logits.scalar_type() == at::kDouble,
                    "scl_loss: CPU supports float32 and float64, got ", forget_logits.scalar_type());
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(forget_logits.scalar_type(), "scl_loss_cpu", [&] {
    out = scl_typed<scalar_t>(forget_logits.contiguous(), retain_logits.contiguous(), temperature, grad_forget,
                              grad_retain);
  });
  return out;
}

at::Tensor scl_loss_cpu(const at::Tensor& f, const at::Tensor& r, double temperature) {
  return std::get<0>(scl_cpu_impl(f, r, temperature, false, false));
}

}  // namespace

TORCH_LIBRARY_IMPL(unlearnx, CPU, m) {
  m.impl("bikl_loss", &bikl_loss_cpu);
  m.impl("_bikl_loss_fwd", &bikl_loss_fwd_cpu);
  m.impl("_bikl_loss_backward", &bikl_loss_backward);
  m.impl("scl_loss", &scl_loss_cpu);
  m.impl("_scl_loss_fwd", &scl_cpu_impl);
  m.impl("_scl_loss_backward", &scl_loss_backward);
}

}  // namespace unlearnx
