#include <cuda_runtime.h>

#include "cuda_utils.h"

namespace simpledet {
namespace cuda {

void zero_async(void* ptr, size_t bytes, void* stream) {
  cudaMemsetAsync(ptr, 0, bytes, static_cast<cudaStream_t>(stream));
}

void copy_to_host_sync(void* dst, const void* src, size_t bytes, void* stream) {
  cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream));
  cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
}

void copy_to_device_sync(void* dst, const void* src, size_t bytes, void* stream) {
  cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream));
  cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
}

const char* last_error() {
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? "" : cudaGetErrorString(err);
}

}  // namespace cuda
}  // namespace simpledet
