// Included first by every kernel header: the kernels compile as CUDA device code under nvcc, and as
// plain C++ under the SIMT emulation of the test build (csrc/simt/simt.h, which defines UNLEARNX_SIMT).
#pragma once
#if !defined(__CUDACC__) && !defined(UNLEARNX_SIMT)
#error "csrc/cuda/*.cuh kernels compile with nvcc, or on the host after csrc/simt/simt.h"
#endif
#include <cstdint>
#include <type_traits>
#include "cuda/launch.cuh"
