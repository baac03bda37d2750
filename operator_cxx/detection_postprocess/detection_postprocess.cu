// Detection post-processing, CUDA decode/threshold kernel: one thread per (image, roi,
// foreground class), same arithmetic as the CPU path (det_decode_box in the header). NMS and
// the merge run in a host pass (detection_postprocess.cc) over the candidates written here.
#include <cuda_runtime.h>

#include "detection_postprocess.h"

namespace simpledet {
namespace {

__global__ void decode_kernel(const float* rois, const float* cls_prob, const float* bbox_pred,
                              const float* im_info, int64_t total, int64_t rois_per_image,
                              int num_classes, DetPostParam p, float* cand) {
  const int num_fg = num_classes - 1;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int c = static_cast<int>(idx % num_fg) + 1;
    int64_t row = idx / num_fg;  // b * R + r
    int64_t b = row / rois_per_image;
    float* e = cand + idx * kDetCandStride;
    float s = cls_prob[row * num_classes + c];
    e[4] = s;
    if (!(s > p.score_thresh)) {
      e[0] = e[1] = e[2] = e[3] = 0.f;
      e[5] = 0.f;
      continue;
    }
    det_decode_box(rois, bbox_pred, row, c, num_classes, im_info[b * 3], im_info[b * 3 + 1], p,
                   e);
    e[5] = 1.f;
  }
}

int blocks_for(int64_t total) {
  int64_t b = (total + 255) / 256;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

}  // namespace

void detection_postprocess_decode_gpu(const float* rois, const float* cls_prob,
                                      const float* bbox_pred, const float* im_info, int batch,
                                      int64_t rois_per_image, int num_classes,
                                      const DetPostParam& p, float* cand, void* stream) {
  int64_t total = batch * rois_per_image * (num_classes - 1);
  if (total == 0) return;
  decode_kernel<<<blocks_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      rois, cls_prob, bbox_pred, im_info, total, rois_per_image, num_classes, p, cand);
}

}  // namespace simpledet
