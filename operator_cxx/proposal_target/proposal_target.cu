// Proposal target, CUDA part: the candidate x gt overlap search (one thread per candidate),
// with the same candidate_overlap() as the CPU path. Sampling runs on the host (.cc).
#include <cuda_runtime.h>

#include "proposal_target.h"

namespace simpledet {
namespace {

__global__ void overlaps_kernel(const float* rois, const float* gt_boxes, int64_t total,
                                int64_t rois_per_image, int num_gt, float* max_iou,
                                int* argmax) {
  const int64_t per_image = rois_per_image + num_gt;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t b = idx / per_image, k = idx % per_image;
    const float* image_rois = rois + b * rois_per_image * 5;
    const float* image_gts = gt_boxes + b * static_cast<int64_t>(num_gt) * 5;
    const float* box = candidate_box(image_rois, rois_per_image, image_gts, k);
    candidate_overlap(box, image_gts, num_gt, max_iou + idx, argmax + idx);
  }
}

int blocks_for(int64_t total) {
  int64_t b = (total + 255) / 256;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

}  // namespace

void proposal_target_overlaps_gpu(const float* rois, const float* gt_boxes, int batch,
                                  int64_t rois_per_image, int num_gt, float* max_iou,
                                  int* argmax, void* stream) {
  int64_t total = static_cast<int64_t>(batch) * (rois_per_image + num_gt);
  if (total == 0) return;
  overlaps_kernel<<<blocks_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      rois, gt_boxes, total, rois_per_image, num_gt, max_iou, argmax);
}

}  // namespace simpledet
