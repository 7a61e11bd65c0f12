// Device code of the fused losses: one warp per row, float accumulation for half/bfloat16/float
// (double for double), loss and gradient in the same pass. Compiled by nvcc (cuda/losses.cu) and, for
// the tests, on the host under the SIMT emulation. See cpu/losses.cpp for the formulas.
#pragma once
#include "cuda/device.cuh"

namespace unlearnx::cuda {

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

// grad may be null (loss only).
// grad is in acc_t: half/bfloat16 gradients are rounded only after the backward scales them.
// log_softmax is (z - m) - log(sum): z - (m + log(sum)) would round at the magnitude of z.
template <typename scalar_t, typename acc_t>
__global__ void bikl_rows_kernel(const scalar_t* __restrict__ logits, const scalar_t* __restrict__ target,
                                 acc_t w, int64_t B, int64_t C, acc_t inv_B, acc_t* __restrict__ row_loss,
                                 acc_t* __restrict__ grad) {
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
  const acc_t log_sum = log(warp_sum(sum_exp));
  const bool reverse = w != acc_t(0);  // skipped, not multiplied by 0: a zero target makes it inf
  acc_t fwd = 0, rev = 0, sum_t = 0;
  for (int64_t j = lane; j < C; j += kWarp) {
    const acc_t ls = (static_cast<acc_t>(z[j]) - m) - log_sum, tj = static_cast<acc_t>(t[j]);
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
    const acc_t ls = (static_cast<acc_t>(z[j]) - m) - log_sum, tj = static_cast<acc_t>(t[j]);
    const acc_t lt = log(tj), p = exp(ls);
    const acc_t rterm = reverse ? w * p * (ls - lt - rev) : acc_t(0);
    grad[row * C + j] = (p * sum_t - tj + rterm) * inv_B;
  }
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

}  // namespace unlearnx::cuda
