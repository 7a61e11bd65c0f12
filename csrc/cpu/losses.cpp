// CPU kernels of the fused losses. At the competition's shapes (B = 64..512 rows, C = 10 classes)
// the arithmetic is tiny and fixed costs dominate, so each loss is: one pass over the rows (max,
// shift), the transcendentals of the whole batch in one vectorised ATen call (at::exp_ / at::log
// pick AVX2/AVX-512 at run time; this file is compiled for the baseline ISA), and one pass that
// reduces the rows and writes the gradient. The gradient is computed in the forward because it
// needs the same softmax; the backward op only scales it. Accumulation is float for float inputs,
// double for double; row reductions are `omp simd` so they vectorise without -ffast-math.
// scl_loss at small shapes has its own kernel (scl_small_body below: no ATen calls, own AVX2 build).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
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

// The small-shape kernel works on packs of 8 values with GCC vector extensions: the AVX2 build does
// them as one ymm register, the baseline build as two xmm, with the same lane order (no -ffast-math
// reassociation is needed or used); the AVX2 build may contract a*b+c into FMA, so the last bit can differ.
constexpr int64_t kLanes = 8;
template <typename T>
struct Pack;
template <>
struct Pack<float> {
  typedef float V __attribute__((vector_size(kLanes * sizeof(float))));
  typedef int32_t I __attribute__((vector_size(kLanes * sizeof(int32_t))));
};
template <>
struct Pack<double> {
  typedef double V __attribute__((vector_size(kLanes * sizeof(double))));
};
#define UNLEARNX_INLINE __attribute__((always_inline)) inline
// Packs only pass between always-inlined functions, never across a call boundary: the ABI note is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

template <typename V, typename T>
UNLEARNX_INLINE V load_pack(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
UNLEARNX_INLINE void store_pack(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}
// Lanes summed as a tree ((0+4)+(2+6)) + ((1+5)+(3+7)): short dependency chain, same order in every build.
template <typename V>
UNLEARNX_INLINE double pack_total(V v) {
  auto a = v[0] + v[4], b = v[1] + v[5], c = v[2] + v[6], d = v[3] + v[7];
  return static_cast<double>((a + c) + (b + d));
}

// exp(x) of 8 floats (Cephes expf: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-7 polynomial, 2^n put in
// the exponent bits; about 1 ulp). Inputs are S - rowmax <= 0; below -87.3 the result is clamped to
// the smallest normal float (~1e-38) instead of underflowing to 0. NaN propagates.
UNLEARNX_INLINE Pack<float>::V exp_nonpositive(Pack<float>::V x) {
  using V = Pack<float>::V;
  using I = Pack<float>::I;
  const V lo = V{} - 87.3f;
  x = x < lo ? lo : x;
  const V magic = V{} + 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const V n = (x * 1.44269504088896341f + magic) - magic;
  V r = x - n * 0.693359375f;  // ln 2 in two parts: n * 0.693359375 is exact
  r = r - n * -2.12194440e-4f;
  const V r2 = r * r;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  return p * std::bit_cast<V>(bits);
}
// float64 is the exact (gradcheck) path: libm exp per lane.
UNLEARNX_INLINE Pack<double>::V exp_nonpositive(Pack<double>::V x) {
  for (int64_t k = 0; k < kLanes; ++k) x[k] = std::exp(x[k]);
  return x;
}
UNLEARNX_INLINE float exp_nonpositive(float x) {
  Pack<float>::V v{};
  v[0] = x;
  return exp_nonpositive(v)[0];
}
UNLEARNX_INLINE double exp_nonpositive(double x) { return std::exp(x); }

// The small-shape SCL kernel (the competition's B_f = 64, B_r = 256..512, C = 10): one pass over the
// forget rows with everything L1-resident. R is transposed to Rt [C, B_r] (scaled by 1/t, rows padded
// with zeros to whole packs) so that every inner loop runs over B_r with unit stride. Per block of
// kRows forget rows: S_i/t = sum_c F_ic Rt_c (C products per store), max/sum, exp, softmax into
// g_i = (softmax_i - 1/B_r) / B_f = t dL/dS_i (zero in the padding), then dF_ic = <g_i, Rt_c> (four
// classes per pass over g_i) and dRt_c += sum_i F_ic g_i (one read-modify-write per block, not per
// row); dR = dRt^T / t at the end. Single-threaded: ~0.3M multiply-adds cost less than a fork-join.
constexpr int64_t kRows = 4;

// Rounded up to whole packs, plus 16 so that rows are not 4 KiB apart in memory (4K-aliasing stalls).
inline int64_t padded_cols(int64_t Br) { return (Br + kLanes - 1) / kLanes * kLanes + 16; }

template <typename T>
UNLEARNX_INLINE double scl_small_body(const T* F, const T* R, int64_t Bf, int64_t Br, int64_t C, double temperature,
                                      T* Rt, T* dRt, T* s_all, T* dF, T* dR) {
  using V = typename Pack<T>::V;
  const T inv_t = static_cast<T>(1.0 / temperature);
  const T inv_Br = static_cast<T>(1.0 / Br);
  const T inv_Bf = static_cast<T>(1.0 / static_cast<double>(Bf));
  const int64_t Bp = padded_cols(Br);  // row stride of Rt, dRt and the row buffers
  const int64_t Br_main = Br - Br % kLanes;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t j = 0; j < Br; ++j) Rt[c * Bp + j] = R[j * C + c] * inv_t;
    for (int64_t j = Br; j < Bp; ++j) Rt[c * Bp + j] = 0;
  }
  if (dR != nullptr) std::fill(dRt, dRt + C * Bp, T(0));
  double total = 0;
  for (int64_t i0 = 0; i0 < Bf; i0 += kRows) {
    const int64_t rows = std::min(kRows, Bf - i0);
    for (int64_t r = 0; r < rows; ++r) {
      const T* f = F + (i0 + r) * C;
      T* s = s_all + r * Bp;
      // Four packs at a time: four independent multiply-add chains instead of one C long.
      int64_t j = 0;
      for (; j + 4 * kLanes <= Bp; j += 4 * kLanes) {
        V a0 = f[0] * load_pack<V>(Rt + j), a1 = f[0] * load_pack<V>(Rt + j + kLanes);
        V a2 = f[0] * load_pack<V>(Rt + j + 2 * kLanes), a3 = f[0] * load_pack<V>(Rt + j + 3 * kLanes);
        for (int64_t c = 1; c < C; ++c) {
          const T fc = f[c];
          const T* rc = Rt + c * Bp + j;
          a0 += fc * load_pack<V>(rc);
          a1 += fc * load_pack<V>(rc + kLanes);
          a2 += fc * load_pack<V>(rc + 2 * kLanes);
          a3 += fc * load_pack<V>(rc + 3 * kLanes);
        }
        store_pack(s + j, a0);
        store_pack(s + j + kLanes, a1);
        store_pack(s + j + 2 * kLanes, a2);
        store_pack(s + j + 3 * kLanes, a3);
      }
      for (; j < Bp; j += kLanes) {
        V acc = f[0] * load_pack<V>(Rt + j);
        for (int64_t c = 1; c < C; ++c) acc += f[c] * load_pack<V>(Rt + c * Bp + j);
        store_pack(s + j, acc);
      }
      // Row max and row sum (of S/t), padding excluded.
      V mx = V{} + s[0], sm = V{};
      for (int64_t j = 0; j < Br_main; j += kLanes) {
        const V v = load_pack<V>(s + j);
        mx = v > mx ? v : mx;
        sm += v;
      }
      for (int64_t j = Br_main; j < Br; ++j) {
        mx[j - Br_main] = s[j] > mx[j - Br_main] ? s[j] : mx[j - Br_main];
        sm[j - Br_main] += s[j];
      }
      T m = mx[0];
      for (int64_t k = 1; k < kLanes; ++k) m = mx[k] > m ? mx[k] : m;
      const double row_sum = pack_total(sm);
      // exp(S/t - max) in place, and its sum.
      V se = V{};
      for (int64_t j = 0; j < Br_main; j += kLanes) {
        const V e = exp_nonpositive(load_pack<V>(s + j) - m);
        store_pack(s + j, e);
        se += e;
      }
      for (int64_t j = Br_main; j < Br; ++j) {
        s[j] = exp_nonpositive(static_cast<T>(s[j] - m));
        se[j - Br_main] += s[j];
      }
      const double sum_exp = pack_total(se);
      total += static_cast<double>(m) + std::log(sum_exp) - row_sum / static_cast<double>(Br);
      const T inv_sum = static_cast<T>(1.0 / sum_exp);
      for (int64_t j = 0; j < Br; ++j) s[j] = (s[j] * inv_sum - inv_Br) * inv_Bf;
      for (int64_t j = Br; j < Bp; ++j) s[j] = 0;
      if (dF != nullptr) {
        int64_t c = 0;
        for (; c + 4 <= C; c += 4) {
          const T* r0 = Rt + c * Bp;
          V a0 = V{}, a1 = V{}, a2 = V{}, a3 = V{};
          for (int64_t j = 0; j < Bp; j += kLanes) {
            const V g = load_pack<V>(s + j);
            a0 += g * load_pack<V>(r0 + j);
            a1 += g * load_pack<V>(r0 + Bp + j);
            a2 += g * load_pack<V>(r0 + 2 * Bp + j);
            a3 += g * load_pack<V>(r0 + 3 * Bp + j);
          }
          T* d = dF + (i0 + r) * C + c;
          d[0] = static_cast<T>(pack_total(a0));
          d[1] = static_cast<T>(pack_total(a1));
          d[2] = static_cast<T>(pack_total(a2));
          d[3] = static_cast<T>(pack_total(a3));
        }
        for (; c < C; ++c) {
          const T* rc = Rt + c * Bp;
          V a0 = V{};
          for (int64_t j = 0; j < Bp; j += kLanes) a0 += load_pack<V>(s + j) * load_pack<V>(rc + j);
          dF[(i0 + r) * C + c] = static_cast<T>(pack_total(a0));
        }
      }
    }
    if (dR == nullptr) continue;
    const T* f = F + i0 * C;
    if (rows == kRows) {
      const T *g0 = s_all, *g1 = s_all + Bp, *g2 = s_all + 2 * Bp, *g3 = s_all + 3 * Bp;
      for (int64_t c = 0; c < C; ++c) {
        const T f0 = f[c], f1 = f[C + c], f2 = f[2 * C + c], f3 = f[3 * C + c];
        T* dc = dRt + c * Bp;
        for (int64_t j = 0; j < Bp; j += kLanes) {
          const V upd = (f0 * load_pack<V>(g0 + j) + f1 * load_pack<V>(g1 + j)) +
                        (f2 * load_pack<V>(g2 + j) + f3 * load_pack<V>(g3 + j));
          store_pack(dc + j, load_pack<V>(dc + j) + upd);
        }
      }
    } else {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < C; ++c) {
          const T fc = f[r * C + c];
          const T* g = s_all + r * Bp;
          T* dc = dRt + c * Bp;
          for (int64_t j = 0; j < Bp; j += kLanes) store_pack(dc + j, load_pack<V>(dc + j) + fc * load_pack<V>(g + j));
        }
    }
  }
  if (dR != nullptr)
    for (int64_t j = 0; j < Br; ++j)
      for (int64_t c = 0; c < C; ++c) dR[j * C + c] = dRt[c * Bp + j] * inv_t;
  return total;
}

// Two builds of the float kernel on x86, picked once at run time: the extension is compiled for the baseline
// ISA (SSE2), where the packs run 4 floats wide and exp-heavy code is ~3x slower than with AVX2+FMA. Other
// architectures (aarch64, ppc64le, ...) compile the portable baseline only.
double scl_small_baseline(const float* F, const float* R, int64_t Bf, int64_t Br, int64_t C, double t, float* Rt,
                          float* dRt, float* s, float* dF, float* dR) {
  return scl_small_body<float>(F, R, Bf, Br, C, t, Rt, dRt, s, dF, dR);
}
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) double scl_small_avx2(const float* F, const float* R, int64_t Bf, int64_t Br,
                                                          int64_t C, double t, float* Rt, float* dRt, float* s,
                                                          float* dF, float* dR) {
  return scl_small_body<float>(F, R, Bf, Br, C, t, Rt, dRt, s, dF, dR);
}
double scl_small(const float* F, const float* R, int64_t Bf, int64_t Br, int64_t C, double t, float* Rt, float* dRt,
                 float* s, float* dF, float* dR) {
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has_avx2 ? scl_small_avx2(F, R, Bf, Br, C, t, Rt, dRt, s, dF, dR)
                  : scl_small_baseline(F, R, Bf, Br, C, t, Rt, dRt, s, dF, dR);
}
#else
double scl_small(const float* F, const float* R, int64_t Bf, int64_t Br, int64_t C, double t, float* Rt, float* dRt,
                 float* s, float* dF, float* dR) {
  return scl_small_baseline(F, R, Bf, Br, C, t, Rt, dRt, s, dF, dR);
}
#endif
double scl_small(const double* F, const double* R, int64_t Bf, int64_t Br, int64_t C, double t, double* Rt,
                 double* dRt, double* s, double* dF, double* dR) {
  return scl_small_body<double>(F, R, Bf, Br, C, t, Rt, dRt, s, dF, dR);
}

// Up to this many multiply-adds (B_f B_r C) the direct kernel wins; above it the BLAS path does.
constexpr int64_t kSmallSclWork = int64_t(1) << 23;

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_small_typed(const at::Tensor& F, const at::Tensor& R,
                                                               double temperature, bool grad_forget,
                                                               bool grad_retain) {
  const int64_t Bf = F.size(0), Br = R.size(0), C = F.size(1);
  at::Tensor dF = grad_forget ? at::empty({Bf, C}, F.options()) : at::empty({0}, F.options());
  at::Tensor dR = grad_retain ? at::empty({Br, C}, F.options()) : at::empty({0}, F.options());
  // Rt, dRt (when needed) and the row buffers in one scratch allocation.
  const int64_t Bp = padded_cols(Br);
  std::vector<scalar_t> scratch(static_cast<size_t>((grad_retain ? 2 : 1) * C * Bp + kRows * Bp));
  scalar_t* Rt = scratch.data();
  scalar_t* dRt = grad_retain ? Rt + C * Bp : nullptr;
  scalar_t* s = Rt + (grad_retain ? 2 : 1) * C * Bp;
  const double total = scl_small(F.const_data_ptr<scalar_t>(), R.const_data_ptr<scalar_t>(), Bf, Br, C,
                                 temperature, Rt, dRt, s, grad_forget ? dF.mutable_data_ptr<scalar_t>() : nullptr,
                                 grad_retain ? dR.mutable_data_ptr<scalar_t>() : nullptr);
  at::Tensor loss = at::empty({}, F.options());
  *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total / Bf);
  return {loss, dF, dR};
}

// S = F R^T / t ([B_f, B_r]); loss = mean_i (LSE(S_i) - mean_j S_ij). The S buffer becomes, in place,
// G = dL/dS / t = (softmax(S_i) - 1/B_r) / (B_f t), so that dF = G R and dR = G^T F (BLAS).
template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> scl_blas_typed(const at::Tensor& F, const at::Tensor& R, double temperature,
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
    const at::Tensor F = forget_logits.contiguous(), R = retain_logits.contiguous();
    const bool small = F.size(0) * R.size(0) * F.size(1) <= kSmallSclWork;
    out = small ? scl_small_typed<scalar_t>(F, R, temperature, grad_forget, grad_retain)
                : scl_blas_typed<scalar_t>(F, R, temperature, grad_forget, grad_retain);
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
