// Host-callable CUDA helpers with plain-C++ signatures (implemented in cuda_utils.cu), so the
// registration .cc files compiled by g++ never need CUDA headers.
#ifndef SIMPLEDET_CUDA_UTILS_H_
#define SIMPLEDET_CUDA_UTILS_H_

#include <cstddef>

namespace simpledet {
namespace cuda {

// Zeroes `bytes` bytes at device pointer `ptr` on `stream` (a cudaStream_t).
void zero_async(void* ptr, size_t bytes, void* stream);

// Copies between host and device on `stream` and waits for it.
void copy_to_host_sync(void* dst, const void* src, size_t bytes, void* stream);
void copy_to_device_sync(void* dst, const void* src, size_t bytes, void* stream);

// Message of the last CUDA error (empty when none), clearing it.
const char* last_error();

}  // namespace cuda
}  // namespace simpledet

#endif  // SIMPLEDET_CUDA_UTILS_H_
