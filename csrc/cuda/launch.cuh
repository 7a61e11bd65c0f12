// Launch geometry of the CUDA kernels, shared by the .cu host code and the simt test build, so that
// the tests launch the kernels exactly as the GPU build does. Plain C++.
#pragma once
#include <algorithm>
#include <cstdint>

namespace unlearnx::cuda {

constexpr int kWarp = 32;

struct Geometry {
  unsigned grid;
  unsigned block;
};

// Loss kernels: one warp per row, kRowsPerBlock rows (warps) per block.
constexpr int kRowsPerBlock = 8;  // 256 threads
inline Geometry rows_geometry(int64_t rows) {
  return {static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(kWarp * kRowsPerBlock)};
}

// Element-wise / grid-stride kernels: kThreads per block, at most 8 blocks per multiprocessor.
constexpr int kThreads = 256;
inline Geometry grid_stride_geometry(int64_t n, int multiprocessors) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(std::max(multiprocessors, 1)) * 8;
  return {static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, cap))), unsigned(kThreads)};
}

}  // namespace unlearnx::cuda
