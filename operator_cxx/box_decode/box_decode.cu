// Box decoding between Cascade R-CNN stages, CUDA kernel: one thread per roi, running the
// CPU path's box_decode_row (box_decode.h): the same arithmetic (CUDA's expf may differ from
// the C library's by an ulp).
#include <cuda_runtime.h>

#include "box_decode.h"

namespace simpledet {
namespace {

__global__ void box_decode_kernel(const float* rois, const float* deltas, const float* im_info,
                                  int batch, int64_t num_rois, BoxDecodeParam p, float* out) {
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       row < num_rois; row += static_cast<int64_t>(blockDim.x) * gridDim.x)
    box_decode_row(rois, deltas, im_info, batch, row, p, out);
}

int blocks_for(int64_t total) {
  int64_t b = (total + 255) / 256;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

}  // namespace

void box_decode_gpu(const float* rois, const float* deltas, const float* im_info, int batch,
                    int64_t num_rois, const BoxDecodeParam& p, float* out, void* stream) {
  if (num_rois == 0) return;
  box_decode_kernel<<<blocks_for(num_rois), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      rois, deltas, im_info, batch, num_rois, p, out);
}

}  // namespace simpledet
