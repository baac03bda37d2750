// RetinaNet post-processing: per-level sigmoid scores and box deltas of all anchors to final
// detections, shared by the CPU (.cc) and CUDA (.cu) implementations.
//
// Candidate numbering: inside image b and level l, candidate o is element o of the image's
// (A * C, H, W) score block, o = (a * C + c) * H * W + y * W + x: anchor a at (y, x), class
// c + 1. Per (image, level): scores > score_thresh, the pre_nms_top_n best by score (ties: lower
// o first), decoded and clipped. Boxes use the rounding-explicit arithmetic of the RPN op
// (pyramid_proposal.h), so the host and the device give the same bits.
#ifndef SIMPLEDET_RETINA_POSTPROCESS_H_
#define SIMPLEDET_RETINA_POSTPROCESS_H_

#include <cstddef>
#include <cstdint>

#include "../pyramid_proposal/pyramid_proposal.h"

namespace simpledet {

constexpr int kRPMaxLevels = 8;

struct RetinaPostParam {
  int num_levels;
  float strides[kRPMaxLevels];  // ascending
  int num_anchors;              // A = len(ratios) * len(scales)
  float means[4], stds[4];      // delta de-normalization: d * stds + means
  float score_thresh;
  float nms_threshold;
  int pre_nms_top_n;            // per image and level
  int max_det;                  // per image
};

// Floats per candidate in the GPU path's host buffer: x1, y1, x2, y2, score, class (1..C).
constexpr int kRPCandStride = 6;

// Decodes candidate o of an image's level (see the numbering above) and clips it to the image.
// base: the level's (A, 4) base anchors; bbox: the image's (4A, H, W) delta block, channel
// a * 4 + k = delta k of anchor a. Writes the box and returns the class (1..C).
SD_HD inline int rp_decode(const RetinaPostParam& p, float stride, const float* base,
                           const float* bbox, int height, int width, int num_classes, int64_t o,
                           float im_h, float im_w, float* box) {
  const int64_t plane = static_cast<int64_t>(height) * width;
  const int64_t channel = o / plane, pix = o - channel * plane;
  const int a = static_cast<int>(channel / num_classes);
  const int cls = static_cast<int>(channel - static_cast<int64_t>(a) * num_classes) + 1;
  const int y = static_cast<int>(pix / width), x = static_cast<int>(pix - y * int64_t{width});
  const float* anchor_base = base + 4 * a;
  const float sx = PP_MUL(static_cast<float>(x), stride);
  const float sy = PP_MUL(static_cast<float>(y), stride);
  const float anchor[4] = {PP_ADD(anchor_base[0], sx), PP_ADD(anchor_base[1], sy),
                           PP_ADD(anchor_base[2], sx), PP_ADD(anchor_base[3], sy)};
  const float* d = bbox + static_cast<int64_t>(a) * 4 * plane + pix;
  float delta[4];
  for (int k = 0; k < 4; ++k) delta[k] = PP_ADD(PP_MUL(d[k * plane], p.stds[k]), p.means[k]);
  pp_decode(anchor, delta[0], delta[1], delta[2], delta[3], box);
  box_clip(box, im_h, im_w);
  return cls;
}

// CUDA implementation of the per-(image, level) stage (retina_postprocess.cu): threshold,
// top-k and decode on the device. cls[l] (B, A*C, H_l, W_l), bbox[l] (B, 4A, H_l, W_l) and
// im_info (B, 3) are device pointers; base_anchors is a host (L, A, 4) array. Writes, on the
// host, counts[b * L + l] = the number of candidates kept for (b, l) (<= pre_nms_top_n) and
// their rows, best first, at cands[((b * L + l) * pre_nms_top_n + j) * kRPCandStride]. The
// workspace (device memory) must hold retina_postprocess_gpu_workspace() bytes.
size_t retina_postprocess_gpu_workspace(const RetinaPostParam& p, int batch, int num_classes,
                                        const int* heights, const int* widths);
void retina_postprocess_candidates_gpu(const RetinaPostParam& p, int batch, int num_classes,
                                       const int* heights, const int* widths,
                                       const float* const* cls, const float* const* bbox,
                                       const float* im_info, const float* base_anchors,
                                       float* cands, int* counts, void* workspace,
                                       size_t workspace_bytes, void* stream);

}  // namespace simpledet

#endif  // SIMPLEDET_RETINA_POSTPROCESS_H_
