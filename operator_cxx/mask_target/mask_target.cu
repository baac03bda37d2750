// Mask R-CNN mask targets, CUDA kernel: one thread per (roi, pixel), each testing its pixel's
// sample point with row_contains() from mask_target.h (the CPU path's scanlines count the same
// edge crossings, so both agree bit for bit). The thread of pixel 0 writes the roi's status.
#include <cuda_runtime.h>

#include "mask_target.h"

namespace simpledet {
namespace {

__global__ void mask_target_kernel(const float* rois, const float* gt_index,
                                   const float* gt_polys, int64_t total, int batch, int num_gt,
                                   int64_t row_len, int mask_size, float* out, int* status) {
  const int64_t area = static_cast<int64_t>(mask_size) * mask_size;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t r = idx / area;
    const int pixel = static_cast<int>(idx % area);
    const float* roi = rois + r * 5;
    int b = 0, j = 0, bad;
    int s = locate_gt_row(roi, gt_index[r], batch, num_gt, &b, &j);
    const float* row = gt_polys + (static_cast<int64_t>(b) * num_gt + j) * row_len;
    if (s == kMaskOk) s = check_gt_row(row, row_len, &bad);
    if (pixel == 0) status[r] = s;
    if (s != kMaskOk) {
      out[idx] = -1.f;
      continue;
    }
    const int i = pixel / mask_size, jj = pixel % mask_size;
    const float px = roi_sample(roi[1], roi_extent(roi[1], roi[3]), jj, mask_size);
    const float py = roi_sample(roi[2], roi_extent(roi[2], roi[4]), i, mask_size);
    out[idx] = row_contains(row, px, py) ? 1.f : 0.f;
  }
}

int blocks_for(int64_t total) {
  int64_t b = (total + 255) / 256;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

}  // namespace

void mask_target_gpu(const float* rois, const float* gt_index, const float* gt_polys,
                     int64_t num_rois, int batch, int num_gt, int64_t row_len, int mask_size,
                     float* out, int* status, void* stream) {
  const int64_t total = num_rois * mask_size * mask_size;
  if (total == 0) return;
  mask_target_kernel<<<blocks_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      rois, gt_index, gt_polys, total, batch, num_gt, row_len, mask_size, out, status);
}

}  // namespace simpledet
