// The GPU launcher of the shared host code (cuda/*_host.h): <<<>>> on the current stream, then the
// launch check. nvcc only.
#pragma once
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/launch.cuh"

namespace unlearnx::cuda {

struct CudaLaunch {
  int multiprocessors() const {
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
    return sms;
  }
  template <typename Kernel, typename... Args>
  void operator()(Geometry g, Kernel kernel, Args... args) const {
    kernel<<<g.grid, g.block, 0, c10::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace unlearnx::cuda
