// The sanitizer subset of the SIMT tests: a few kernels of csrc/cuda/*.cuh run under the emulation with
// free-running threads, in a plain C++ program (no torch), so that tools/cuda_checks.sh can build it with
// -fsanitize=address or -fsanitize=thread and catch out-of-bounds accesses and data races in the kernels.
// `--toy-race` runs a toy kernel with a missing __syncthreads instead (ThreadSanitizer must report it).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "simt/simt.h"

#include "cuda/losses.cuh"
#include "cuda/reinit.cuh"

using namespace unlearnx::cuda;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    ++failures;
  }
}

void launch(Geometry g, auto kernel, auto... args) { simt::launch(dim3(g.grid), dim3(g.block), kernel, args...); }

void bikl_case(int64_t B, int64_t C) {
  std::mt19937 rng(B * 1000 + C);
  std::normal_distribution<float> normal;
  std::vector<float> z(B * C), t(B * C), row_loss(B), grad(B * C);
  for (auto& v : z) v = 3 * normal(rng);
  for (int64_t i = 0; i < B; ++i) {
    double s = 0;
    for (int64_t j = 0; j < C; ++j) s += t[i * C + j] = std::exp(normal(rng));
    for (int64_t j = 0; j < C; ++j) t[i * C + j] = static_cast<float>(t[i * C + j] / s);
  }
  const float w = 0.85f;
  launch(rows_geometry(B), bikl_rows_kernel<float, float>, z.data(), t.data(), w, B, C, 1.0f / B, row_loss.data(),
         grad.data());
  for (int64_t i = 0; i < B; ++i) {  // double-precision oracle of one row
    double m = -INFINITY, s = 0, fwd = 0, rev = 0;
    for (int64_t j = 0; j < C; ++j) m = std::max(m, double(z[i * C + j]));
    for (int64_t j = 0; j < C; ++j) s += std::exp(z[i * C + j] - m);
    for (int64_t j = 0; j < C; ++j) {
      const double ls = z[i * C + j] - m - std::log(s), tj = t[i * C + j], p = std::exp(ls);
      fwd += tj * (std::log(tj) - ls);
      rev += p * (ls - std::log(tj));
    }
    check(std::abs(row_loss[i] - (fwd + w * rev)) < 1e-4 * (1 + std::abs(fwd + w * rev)), "bikl row loss");
  }
}

void scl_case(int64_t Bf, int64_t Br) {
  std::mt19937 rng(Bf + Br);
  std::normal_distribution<float> normal;
  std::vector<float> S(Bf * Br), row_loss(Bf);
  for (auto& v : S) v = normal(rng);
  const std::vector<float> S0 = S;
  launch(rows_geometry(Bf), scl_rows_kernel<float>, S.data(), Bf, Br, 1.0f, 1.0f / Bf, true, row_loss.data());
  for (int64_t i = 0; i < Bf; ++i) {
    double m = -INFINITY, s = 0, mean = 0;
    for (int64_t j = 0; j < Br; ++j) m = std::max(m, double(S0[i * Br + j]));
    for (int64_t j = 0; j < Br; ++j) s += std::exp(S0[i * Br + j] - m), mean += S0[i * Br + j] / Br;
    check(std::abs(row_loss[i] - (m + std::log(s) - mean)) < 1e-4, "scl row loss");
  }
}

// The pipeline of cuda/reinit_host.h, in plain C++.
void reinit_case(int64_t n, int64_t k, bool largest) {
  std::mt19937 rng(n + k);
  std::normal_distribution<float> normal;
  std::vector<float> scores(n), weight(n, 0.0f), noise(k);
  for (auto& v : scores) v = std::round(normal(rng) * 4) / 4;  // many ties
  for (int64_t i = 0; i < k; ++i) noise[i] = 1.0f + static_cast<float>(i);
  std::vector<bool> expected(n, false);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return largest ? scores[a] > scores[b] : scores[a] < scores[b];
  });
  for (int64_t i = 0; i < k; ++i) expected[order[i]] = true;

  const Geometry g = grid_stride_geometry(n, 1);
  const int64_t chunk = (n + g.grid - 1) / g.grid;
  std::vector<uint64_t> state = {0, 0, static_cast<uint64_t>(k)};
  std::vector<unsigned long long> hist(4 * kBins, 0);
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 8 * (3 - pass);
    launch(g, radix_histogram_kernel<float>, static_cast<const float*>(scores.data()), n, largest,
           static_cast<const uint64_t*>(state.data()), shift, hist.data() + pass * kBins);
    launch(Geometry{1, 1}, radix_pick_kernel<uint32_t>,
           static_cast<const unsigned long long*>(hist.data() + pass * kBins), shift, state.data());
  }
  std::vector<int64_t> counts(2 * g.grid), offsets(2 * g.grid, 0);
  launch(g, threshold_count_kernel<float>, static_cast<const float*>(scores.data()), n, chunk, largest,
         static_cast<const uint64_t*>(state.data()), counts.data());
  for (unsigned b = 1; b < g.grid; ++b)
    for (int c = 0; c < 2; ++c) offsets[2 * b + c] = offsets[2 * (b - 1) + c] + counts[2 * (b - 1) + c];
  std::unique_ptr<bool[]> mask(new bool[n]);
  launch(g, apply_kernel<float, float>, static_cast<const float*>(scores.data()), n, chunk, largest,
         static_cast<const uint64_t*>(state.data()), static_cast<const int64_t*>(offsets.data()),
         static_cast<const float*>(noise.data()), weight.data(), mask.get());
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    check(mask[i] == expected[i], "reinit mask at " + std::to_string(i));
    if (expected[i]) check(weight[i] == noise[next++], "reinit value order at " + std::to_string(i));
    else check(weight[i] == 0.0f, "reinit untouched entry");
  }
}

template <bool kSync>
__global__ void toy_reverse_kernel(const float* in, float* out) {
  __shared__ float s[256];
  s[threadIdx.x] = in[threadIdx.x];
  if (kSync) __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

}  // namespace

int main(int argc, char** argv) {
  simt::options().schedule = simt::Schedule::kParallel;
  try {
    if (argc > 1 && std::string(argv[1]) == "--toy-race") {
      std::vector<float> in(256, 1.0f), out(256);
      launch(Geometry{1, 256}, toy_reverse_kernel<false>, static_cast<const float*>(in.data()), out.data());
      std::printf("toy kernel ran\n");
      return 0;
    }
    std::vector<float> in(256, 1.0f), out(256);
    launch(Geometry{1, 256}, toy_reverse_kernel<true>, static_cast<const float*>(in.data()), out.data());
    bikl_case(11, 37);
    bikl_case(1, 300);
    scl_case(9, 70);
    reinit_case(2500, 700, false);
    reinit_case(700, 1, true);
  } catch (const simt::Error& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf(failures ? "simt sanitizer subset: %d failures\n" : "simt sanitizer subset: ok\n", failures);
  return failures ? 1 : 0;
}
