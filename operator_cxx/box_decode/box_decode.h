// Box decoding between Cascade R-CNN stages, shared by the CPU (.cc) and CUDA (.cu) paths:
// each roi [batch_idx, x1, y1, x2, y2] with its class-agnostic normalized deltas becomes the
// refined roi of the next stage, clipped to its own image and keeping its batch index.
#ifndef SIMPLEDET_BOX_DECODE_H_
#define SIMPLEDET_BOX_DECODE_H_

#include <cstdint>

#include "box_utils.h"

namespace simpledet {

struct BoxDecodeParam {
  float means[4];
  float stds[4];
};

// Decodes row `row` of rois (N, 5) with deltas (N, 4) and writes out (N, 5). The deltas are
// de-normalized as d * stds + means, applied by box_decode (dw/dh clipped at log(1000/16)), and
// the box is clipped by box_clip to image b = rois[row, 0] (im_info (B, 3) [height, width,
// scale]); column 0 is copied. The arithmetic is simpledet.core.boxes.decode_boxes +
// clip_boxes, in float32. A row whose batch index is not an integer in [0, B) (the padding
// rows of an image without rois, batch index -1) is copied unchanged.
SD_HD inline void box_decode_row(const float* rois, const float* deltas, const float* im_info,
                                 int batch, int64_t row, const BoxDecodeParam& p, float* out) {
  const float* r = rois + row * 5;
  float* o = out + row * 5;
  const float bf = r[0];
  if (!(bf >= 0.f && bf < static_cast<float>(batch) && bf == floorf(bf))) {
    for (int k = 0; k < 5; ++k) o[k] = r[k];
    return;
  }
  const int64_t b = static_cast<int64_t>(bf);
  const float* d = deltas + row * 4;
  float box[4];
  box_decode(r + 1, d[0] * p.stds[0] + p.means[0], d[1] * p.stds[1] + p.means[1],
             d[2] * p.stds[2] + p.means[2], d[3] * p.stds[3] + p.means[3], box);
  box_clip(box, im_info[b * 3], im_info[b * 3 + 1]);
  o[0] = bf;
  for (int k = 0; k < 4; ++k) o[k + 1] = box[k];
}

// CUDA launcher (box_decode.cu): box_decode_row for every row on `stream` (a cudaStream_t).
// All pointers are device pointers.
void box_decode_gpu(const float* rois, const float* deltas, const float* im_info, int batch,
                    int64_t num_rois, const BoxDecodeParam& p, float* out, void* stream);

}  // namespace simpledet

#endif  // SIMPLEDET_BOX_DECODE_H_
