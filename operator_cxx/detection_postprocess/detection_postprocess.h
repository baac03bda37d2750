// Detection post-processing: box-head outputs (rois, class probabilities, class-specific box
// deltas) to final detections, shared by the CPU (.cc) and CUDA (.cu) implementations.
//
// Per image and per foreground class c: every roi whose probability for c is > score_thresh is
// decoded with its class-c deltas (de-normalized as d * stds + means, box_decode's dw/dh clip),
// clipped to the image; greedy NMS per class (+1 IoU convention, IoU > nms_threshold
// suppresses, stable tie order); classes are merged, sorted by score (stable) and truncated.
#ifndef SIMPLEDET_DETECTION_POSTPROCESS_H_
#define SIMPLEDET_DETECTION_POSTPROCESS_H_

#include <cstdint>

#include "box_utils.h"

namespace simpledet {

struct DetPostParam {
  float means[4];
  float stds[4];
  float score_thresh;
  float nms_threshold;
  int max_det;
  bool class_agnostic;
};

// Floats per decoded candidate in the CUDA path's buffer: x1, y1, x2, y2, score, valid.
constexpr int kDetCandStride = 6;

// Decodes roi row `row` (rois: (N, 5) [batch_idx, x1, y1, x2, y2]) with the deltas of class
// `cls` (bbox_pred: (N, 4 * C), or (N, 4) when class_agnostic) and clips it to an image of
// height `im_h`, width `im_w`. Same float arithmetic as simpledet.core.boxes.decode_boxes +
// clip_boxes: d * std + mean, then box_decode, then box_clip.
SD_HD inline void det_decode_box(const float* rois, const float* bbox_pred, int64_t row,
                                 int cls, int num_classes, float im_h, float im_w,
                                 const DetPostParam& p, float* out) {
  const float* r = rois + row * 5 + 1;
  const float* d = p.class_agnostic ? bbox_pred + row * 4
                                    : bbox_pred + row * 4 * static_cast<int64_t>(num_classes) +
                                          4 * static_cast<int64_t>(cls);
  float dx = d[0] * p.stds[0] + p.means[0];
  float dy = d[1] * p.stds[1] + p.means[1];
  float dw = d[2] * p.stds[2] + p.means[2];
  float dh = d[3] * p.stds[3] + p.means[3];
  box_decode(r, dx, dy, dw, dh, out);
  box_clip(out, im_h, im_w);
}

// Launcher of the CUDA decode/threshold kernel (detection_postprocess.cu). For every image b,
// roi r (of R per image) and foreground class c (1..C-1) it writes kDetCandStride floats at
// cand[((b * R + r) * (C - 1) + c - 1) * kDetCandStride]: the decoded, clipped box, the
// score, and 1 if score > score_thresh else 0. All pointers are device pointers.
void detection_postprocess_decode_gpu(const float* rois, const float* cls_prob,
                                      const float* bbox_pred, const float* im_info, int batch,
                                      int64_t rois_per_image, int num_classes,
                                      const DetPostParam& p, float* cand, void* stream);

}  // namespace simpledet

#endif  // SIMPLEDET_DETECTION_POSTPROCESS_H_
