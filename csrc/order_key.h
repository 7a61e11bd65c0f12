// Order-preserving map from a float to an unsigned key, shared by the CPU kernel, the CUDA kernels and
// the SIMT test build: key(a) < key(b) iff a < b, with -0.0 == +0.0 and every NaN above +inf (the order
// of torch.sort). `largest` flips it so that "smallest key" always means "select first"; equal keys are
// then taken in index order. Integer operations on the bit pattern only: no float compare, so
// flush-to-zero (nvcc's --use_fast_math, or a CPU in FTZ/DAZ mode) cannot make a subnormal equal 0.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define UNLEARNX_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define UNLEARNX_HOST_DEVICE inline
#endif

namespace unlearnx {

UNLEARNX_HOST_DEVICE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
#endif
}
UNLEARNX_HOST_DEVICE uint64_t float_bits(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
#endif
}

template <typename key_t, typename float_t>
UNLEARNX_HOST_DEVICE key_t order_key(float_t x, bool largest) {
  static_assert(sizeof(key_t) == sizeof(float_t), "key and float must have the same width");
  constexpr key_t sign = key_t(1) << (sizeof(key_t) * 8 - 1);
  constexpr key_t inf = sizeof(key_t) == 4 ? key_t(0x7f800000u) : key_t(0x7ff0000000000000ull);
  const key_t bits = static_cast<key_t>(float_bits(x));
  const key_t magnitude = bits & ~sign;
  key_t key;
  if (magnitude > inf) key = ~key_t(0);        // NaN, any sign or payload
  else if (magnitude == 0) key = sign;         // -0.0 and +0.0
  else key = (bits & sign) ? ~bits : (bits | sign);
  return largest ? ~key : key;
}

}  // namespace unlearnx
