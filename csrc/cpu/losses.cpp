// CPU kernels of the fused losses. At the competition's shapes (B = 64..512 rows, C = 10 classes)
// the arithmetic is tiny, so the kernels do one pass per row with everything in registers / L1,
// float accumulation for float inputs (double for double), and threads only for large batches.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "common.h"

namespace unlearnx {
namespace {

// Rows per parallel task: below ~32k elements the OpenMP fork costs more than the work.
inline int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1)); }

// xlogy(x, x): 0 where x == 0, as torch.nn.functional.kl_div.
template <typename acc_t>
inline acc_t xlogx(acc_t x, acc_t log_x) { return x == acc_t(0) ? acc_t(0) : x * log_x; }

// Per row i (z = logits, t = target, ls = log_softmax(z), p = exp(ls), lt = log t):
//   forward  F_i = sum_j xlogy(t,t) - t*ls            (KL(t || p), the notebooks' kl_div(ls, t))
//   reverse  R_i = sum_j p*(ls - lt)                  (KL(p || t), kl_div(lt, p))
//   loss_i   = F_i + w*R_i, and loss = sum_i loss_i / B
//   dloss/dz = (p*sum(t) - t + w*p*(ls - lt - R_i)) / B
template <typename scalar_t>
void bikl_rows(const scalar_t* logits, const scalar_t* target, double reverse_weight, int64_t rows_begin,
               int64_t rows_end, int64_t C, double inv_B, double* row_loss, scalar_t* grad) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t w = static_cast<acc_t>(reverse_weight);
  const acc_t scale = static_cast<acc_t>(inv_B);
  std::vector<acc_t> buf(2 * C);
  acc_t* ls = buf.data();
  acc_t* lt = buf.data() + C;
  for (int64_t i = rows_begin; i < rows_end; ++i) {
    const scalar_t* z = logits + i * C;
    const scalar_t* t = target + i * C;
    acc_t m = static_cast<acc_t>(z[0]);
    for (int64_t j = 1; j < C; ++j) m = std::max(m, static_cast<acc_t>(z[j]));
    acc_t sum_exp = 0;
    for (int64_t j = 0; j < C; ++j) {
      ls[j] = static_cast<acc_t>(z[j]) - m;
      sum_exp += std::exp(ls[j]);
    }
    const acc_t log_sum = std::log(sum_exp);
    acc_t fwd = 0, rev = 0, sum_t = 0;
    for (int64_t j = 0; j < C; ++j) {
      const acc_t tj = static_cast<acc_t>(t[j]);
      ls[j] -= log_sum;
      lt[j] = std::log(tj);
      const acc_t pj = std::exp(ls[j]);
      fwd += xlogx(tj, lt[j]) - tj * ls[j];
      rev += pj * (ls[j] - lt[j]);
      sum_t += tj;
    }
    row_loss[i] = static_cast<double>(fwd) + static_cast<double>(w) * static_cast<double>(rev);
    if (grad != nullptr) {
      scalar_t* g = grad + i * C;
      for (int64_t j = 0; j < C; ++j) {
        const acc_t pj = std::exp(ls[j]);
        const acc_t tj = static_cast<acc_t>(t[j]);
        g[j] = static_cast<scalar_t>((pj * sum_t - tj + w * pj * (ls[j] - lt[j] - rev)) * scale);
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> bikl_cpu_impl(const at::Tensor& logits_in, const at::Tensor& target_in,
                                                 double reverse_weight, bool with_grad) {
  check_bikl_inputs(logits_in, target_in);
  TORCH_CHECK_VALUE(logits_in.scalar_type() == at::kFloat || logits_in.scalar_type() == at::kDouble,
                    "bikl_loss: CPU supports float32 and float64, got ", logits_in.scalar_type());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const int64_t B = logits.size(0), C = logits.size(1);
  at::Tensor grad = with_grad ? at::empty_like(logits) : at::Tensor();
  std::vector<double> row_loss(B);
  at::Tensor loss = at::empty({}, logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "bikl_loss_cpu", [&] {
    const scalar_t* z = logits.const_data_ptr<scalar_t>();
    const scalar_t* t = target.const_data_ptr<scalar_t>();
    scalar_t* g = with_grad ? grad.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B, row_grain(C), [&](int64_t begin, int64_t end) {
      bikl_rows<scalar_t>(z, t, reverse_weight, begin, end, C, 1.0 / B, row_loss.data(), g);
    });
    double total = 0;  // summed in row order: the same result for any thread count
    for (double v : row_loss) total += v;
    *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total / B);
  });
  return {loss, grad};
}

at::Tensor bikl_loss_cpu(const at::Tensor& logits, const at::Tensor& target, double reverse_weight) {
  return std::get<0>(bikl_cpu_impl(logits, target, reverse_weight, /*with_grad=*/false));
}

std::tuple<at::Tensor, at::Tensor> bikl_loss_fwd_cpu(const at::Tensor& logits, const at::Tensor& target,
                                                     double reverse_weight) {
  return bikl_cpu_impl(logits, target, reverse_weight, /*with_grad=*/true);
}

// S = F R^T / t ([B_f, B_r]); per row LSE_i - mean_j S_ij, averaged over rows. In place, S becomes
// dL/dS = (softmax(S_i) - 1/B_r) / B_f, pre-multiplied by 1/t so that dF = G R and dR = G^T F.
std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_cpu_impl(const at::Tensor& forget_in,
                                                            const at::Tensor& retain_in, double temperature,
                                                            bool grad_forget, bool grad_retain) {
  check_scl_inputs(forget_in, retain_in, temperature);
  TORCH_CHECK_VALUE(forget_in.scalar_type() == at::kFloat || forget_in.scalar_type() == at::kDouble,
                    "scl_loss: CPU supports float32 and float64, got ", forget_in.scalar_type());
  const at::Tensor F = forget_in.contiguous();
  const at::Tensor R = retain_in.contiguous();
  const int64_t Bf = F.size(0), Br = R.size(0);
  at::Tensor S = at::mm(F, R.t());  // BLAS; contiguous [Bf, Br]
  const bool need_grad = grad_forget || grad_retain;
  std::vector<double> row_loss(Bf);
  at::Tensor loss = at::empty({}, F.options());
  AT_DISPATCH_FLOATING_TYPES(F.scalar_type(), "scl_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t inv_t = static_cast<acc_t>(1.0 / temperature);
    const acc_t inv_Br = static_cast<acc_t>(1.0 / Br);
    const acc_t g_scale = static_cast<acc_t>(1.0 / (static_cast<double>(Bf) * temperature));
    scalar_t* s_all = S.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, Bf, row_grain(Br), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* s = s_all + i * Br;
        acc_t m = static_cast<acc_t>(s[0]) * inv_t, sum_s = 0;
        for (int64_t j = 0; j < Br; ++j) {
          const acc_t v = static_cast<acc_t>(s[j]) * inv_t;
          m = std::max(m, v);
          sum_s += v;
        }
        acc_t sum_exp = 0;
        for (int64_t j = 0; j < Br; ++j) sum_exp += std::exp(static_cast<acc_t>(s[j]) * inv_t - m);
        const acc_t lse = m + std::log(sum_exp);
        row_loss[i] = static_cast<double>(lse) - static_cast<double>(sum_s) / Br;
        if (need_grad) {
          for (int64_t j = 0; j < Br; ++j)
            s[j] = static_cast<scalar_t>((std::exp(static_cast<acc_t>(s[j]) * inv_t - lse) - inv_Br) * g_scale);
        }
      }
    });
    double total = 0;
    for (double v : row_loss) total += v;
    *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total / Bf);
  });
  at::Tensor empty = at::empty({0}, F.options());
  at::Tensor dF = grad_forget ? at::mm(S, R) : empty;
  at::Tensor dR = grad_retain ? at::mm(S.t(), F) : empty.clone();
  return {loss, dF, dR};
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
