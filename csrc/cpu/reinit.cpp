// masked_reinit_ on CPU: O(n) selection with std::nth_element on order-preserving integer keys,
// then one pass in index order that writes the mask and the fresh N(0, std^2) values.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "common.h"

namespace unlearnx {
namespace {

template <typename score_t, typename key_t, typename weight_t>
void reinit_cpu_typed(weight_t* w, const score_t* scores, bool* mask, int64_t n, int64_t k, bool largest,
                      const weight_t* noise) {
  std::vector<key_t> keys(n);
  at::parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) keys[i] = order_key<key_t>(scores[i], largest);
  });
  std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end());
  const key_t threshold = keys[k - 1];
  // keys[0, k-1) are all <= threshold; those equal to it are ties, taken in index order below.
  int64_t below = 0;
  for (int64_t i = 0; i < k - 1; ++i) below += keys[i] < threshold;
  int64_t ties_left = k - below;
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    const key_t key = order_key<key_t>(scores[i], largest);
    bool take = key < threshold;
    if (key == threshold && ties_left > 0) {
      take = true;
      --ties_left;
    }
    mask[i] = take;
    if (take) w[i] = noise[next++];
  }
}

at::Tensor masked_reinit_cpu(at::Tensor& weight, const at::Tensor& scores_in, double fraction, double std_dev,
                             bool largest, std::optional<int64_t> seed) {
  const int64_t k = check_reinit_inputs(weight, scores_in, fraction, std_dev);
  TORCH_CHECK_VALUE(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble,
                    "masked_reinit_: CPU weight must be float32 or float64, got ", weight.scalar_type());
  TORCH_CHECK_VALUE(scores_in.scalar_type() == at::kFloat || scores_in.scalar_type() == at::kDouble,
                    "masked_reinit_: CPU scores must be float32 or float64, got ", scores_in.scalar_type());
  const int64_t n = weight.numel();
  at::Tensor mask = at::zeros(weight.sizes(), weight.options().dtype(at::kBool));
  if (k == 0) return mask;
  std::optional<at::Generator> gen;
  if (seed.has_value()) {
    TORCH_CHECK_VALUE(*seed >= 0, "masked_reinit_: seed must be >= 0, got ", *seed);
    gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(*seed));
  }
  // k draws in the weight's dtype, assigned to the selected entries in index order (so a reference that
  // draws the same k numbers from the same generator state gets bit-identical weights).
  at::Tensor noise = at::empty({k}, weight.options()).normal_(0.0, std_dev, gen);
  const at::Tensor scores = scores_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "masked_reinit_cpu", [&] {
    using weight_t = scalar_t;
    weight_t* w = weight.mutable_data_ptr<weight_t>();
    const weight_t* z = noise.const_data_ptr<weight_t>();
    bool* msk = mask.mutable_data_ptr<bool>();
    if (scores.scalar_type() == at::kFloat)
      reinit_cpu_typed<float, uint32_t, weight_t>(w, scores.const_data_ptr<float>(), msk, n, k, largest, z);
    else
      reinit_cpu_typed<double, uint64_t, weight_t>(w, scores.const_data_ptr<double>(), msk, n, k, largest, z);
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(unlearnx, CPU, m) {
  m.impl("masked_reinit_", &masked_reinit_cpu);
}

}  // namespace unlearnx
