// Box arithmetic shared by the ops, in the "+1" pixel convention of py-faster-rcnn, MXNet's
// contrib.Proposal/MultiProposal and the original SimpleDet: a box [x1, y1, x2, y2] covers
// pixels x1..x2, so its width is x2 - x1 + 1. Usable from host and device code.
#ifndef SIMPLEDET_BOX_UTILS_H_
#define SIMPLEDET_BOX_UTILS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#ifdef __CUDACC__
#define SD_HD __host__ __device__
#else
#define SD_HD
#endif

namespace simpledet {

// dw/dh are clipped at log(1000/16) so exp() cannot overflow on a bad regression.
constexpr float kBoxDeltaClip = 4.135166556742356f;

SD_HD inline float box_area(const float* b) {
  return (b[2] - b[0] + 1.f) * (b[3] - b[1] + 1.f);
}

SD_HD inline float box_iou(const float* a, const float* b) {
  float w = fminf(a[2], b[2]) - fmaxf(a[0], b[0]) + 1.f;
  float h = fminf(a[3], b[3]) - fmaxf(a[1], b[1]) + 1.f;
  if (w <= 0.f || h <= 0.f) return 0.f;
  float inter = w * h;
  return inter / (box_area(a) + box_area(b) - inter);
}

// Whether region b covers more than `thresh` of box a's own area: intersection over a's area
// (IoF, "intersection over foreground") > thresh, evaluated as inter > thresh * area(a) as the
// loader's RPN crowd rule (simpledet.data.anchor_target.in_crowd) does.
SD_HD inline bool box_iof_above(const float* a, const float* b, float thresh) {
  float w = fminf(a[2], b[2]) - fmaxf(a[0], b[0]) + 1.f;
  float h = fminf(a[3], b[3]) - fmaxf(a[1], b[1]) + 1.f;
  if (w <= 0.f || h <= 0.f) return false;
  return w * h > thresh * box_area(a);
}

// Applies deltas (dx, dy, dw, dh) (already de-normalized) to box `in`, writing `out`.
SD_HD inline void box_decode(const float* in, float dx, float dy, float dw, float dh, float* out) {
  float w = in[2] - in[0] + 1.f, h = in[3] - in[1] + 1.f;
  float cx = in[0] + 0.5f * (w - 1.f), cy = in[1] + 0.5f * (h - 1.f);
  dw = fminf(dw, kBoxDeltaClip);
  dh = fminf(dh, kBoxDeltaClip);
  float pcx = dx * w + cx, pcy = dy * h + cy;
  float pw = expf(dw) * w, ph = expf(dh) * h;
  out[0] = pcx - 0.5f * (pw - 1.f);
  out[1] = pcy - 0.5f * (ph - 1.f);
  out[2] = pcx + 0.5f * (pw - 1.f);
  out[3] = pcy + 0.5f * (ph - 1.f);
}

// Regression target (dx, dy, dw, dh) taking box `src` to box `dst` (not normalized).
SD_HD inline void box_encode(const float* src, const float* dst, float* delta) {
  float sw = src[2] - src[0] + 1.f, sh = src[3] - src[1] + 1.f;
  float scx = src[0] + 0.5f * (sw - 1.f), scy = src[1] + 0.5f * (sh - 1.f);
  float dw = dst[2] - dst[0] + 1.f, dh = dst[3] - dst[1] + 1.f;
  float dcx = dst[0] + 0.5f * (dw - 1.f), dcy = dst[1] + 0.5f * (dh - 1.f);
  delta[0] = (dcx - scx) / sw;
  delta[1] = (dcy - scy) / sh;
  delta[2] = logf(dw / sw);
  delta[3] = logf(dh / sh);
}

// Clips a box to an image of height h, width w (pixel indices 0..w-1, 0..h-1).
SD_HD inline void box_clip(float* b, float h, float w) {
  b[0] = fmaxf(fminf(b[0], w - 1.f), 0.f);
  b[1] = fmaxf(fminf(b[1], h - 1.f), 0.f);
  b[2] = fmaxf(fminf(b[2], w - 1.f), 0.f);
  b[3] = fmaxf(fminf(b[3], h - 1.f), 0.f);
}

#ifndef __CUDACC__
// Indices of `scores` sorted by descending score; ties keep the lower index first, so the
// order (and therefore NMS) is deterministic.
inline std::vector<int64_t> argsort_desc(const float* scores, int64_t n) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [scores](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  return order;
}

// Greedy NMS over boxes (stride `box_stride` floats, box at offset 0) visited in `order`.
// Returns kept indices in visiting order, at most `max_keep` (<= 0: no limit).
inline std::vector<int64_t> nms_sorted(const float* boxes, int box_stride,
                                       const std::vector<int64_t>& order, float iou_thresh,
                                       int64_t max_keep) {
  std::vector<int64_t> keep;
  std::vector<char> suppressed(order.size(), 0);
  for (size_t i = 0; i < order.size(); ++i) {
    if (suppressed[i]) continue;
    const float* bi = boxes + order[i] * box_stride;
    keep.push_back(order[i]);
    if (max_keep > 0 && static_cast<int64_t>(keep.size()) >= max_keep) break;
    for (size_t j = i + 1; j < order.size(); ++j) {
      if (!suppressed[j] && box_iou(bi, boxes + order[j] * box_stride) > iou_thresh)
        suppressed[j] = 1;
    }
  }
  return keep;
}
#endif

}  // namespace simpledet

#endif  // SIMPLEDET_BOX_UTILS_H_
