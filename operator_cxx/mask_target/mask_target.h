// Mask R-CNN mask targets, shared by the CPU (.cc) and CUDA (.cu) implementations: the layout
// checks of a gt's padded polygon row, the RoI sampling grid and the even-odd crossing rule are
// __host__ __device__ here, and written so that neither compiler can fuse a multiply and an add
// (mul_rn below), so both paths rasterise bit for bit alike.
//
// Padded polygon row (L floats per gt): [P, n_1, x, y, ... (n_1 points), n_2, x, y, ..., n_P,
// ...] then -1 up to L. P <= 0: the gt has no polygon (its mask target is ignored). Polygons are
// in continuous image coordinates (pixel px covers [px, px + 1)); rois are "+1" boxes covering
// [x1, x2 + 1) x [y1, y2 + 1).
#ifndef SIMPLEDET_MASK_TARGET_H_
#define SIMPLEDET_MASK_TARGET_H_

#include <cmath>
#include <cstdint>

#include "box_utils.h"

namespace simpledet {

// Status of one roi's target; codes >= kMaskBadBatch are input errors.
enum MaskTargetStatus : int {
  kMaskOk = 0,           // a target is rasterised
  kMaskIgnored = 1,      // gt_index < 0, or the gt row has P <= 0: the row is all -1
  kMaskBadBatch = 2,     // rois[r, 0] is not an image index in [0, B)
  kMaskBadGtIndex = 3,   // gt_index is not an integer in [0, G)
  kMaskBadCount = 4,     // P is not an integer
  kMaskBadVertices = 5,  // some n_k is not an integer >= 3
  kMaskOverrun = 6,      // some polygon runs past the row's L floats
};

// a * b, never fused with a neighbouring add (nvcc contracts a * b + c into an FMA by default;
// g++ does not emit FMAs for the default x86-64 target).
SD_HD inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// Extent of a "+1" box side: x2 - x1 + 1, at least 1 (fmaxf: a NaN side becomes 1).
SD_HD inline float roi_extent(float lo, float hi) { return fmaxf(hi - lo + 1.f, 1.f); }

// Image coordinate of sample k of M along a roi side starting at `start` with `extent` pixels:
// start + (k + 0.5) * extent / M, evaluated in that order.
SD_HD inline float roi_sample(float start, float extent, int k, int M) {
  return start + mul_rn(static_cast<float>(k) + 0.5f, extent) / static_cast<float>(M);
}

// Whether edge (ax, ay)-(bx, by) crosses the line y = py under the half-open rule (exactly one
// end strictly above py); if so *x is the crossing's abscissa ax + (bx - ax) * t,
// t = (py - ay) / (by - ay). A point (px, py) is inside a polygon when an odd number of its
// edges cross with px < *x (even-odd rule).
SD_HD inline bool edge_crossing(float ax, float ay, float bx, float by, float py, float* x) {
  if ((ay > py) == (by > py)) return false;
  float t = (py - ay) / (by - ay);
  *x = ax + mul_rn(bx - ax, t);
  return true;
}

// Locates roi r's gt: image b = rois[r, 0] and row j = gt_index[r]. Returns kMaskOk (with *b,
// *j set), kMaskIgnored (gt_index < 0), kMaskBadBatch or kMaskBadGtIndex.
SD_HD inline int locate_gt_row(const float* roi, float gt_index, int batch, int num_gt, int* b,
                               int* j) {
  if (gt_index < 0.f) return kMaskIgnored;
  if (!(gt_index == floorf(gt_index)) || !(gt_index < static_cast<float>(num_gt)))
    return kMaskBadGtIndex;
  const float bf = roi[0];
  if (!(bf >= 0.f && bf < static_cast<float>(batch))) return kMaskBadBatch;
  *b = static_cast<int>(bf);
  *j = static_cast<int>(gt_index);
  return kMaskOk;
}

// Checks a gt row of L floats: kMaskOk, kMaskIgnored (P <= 0), or an error with *bad_polygon
// the 0-based polygon at fault (-1 when P itself is).
SD_HD inline int check_gt_row(const float* row, int64_t L, int* bad_polygon) {
  *bad_polygon = -1;
  const float pf = row[0];
  if (pf <= 0.f) return kMaskIgnored;
  if (!(pf == floorf(pf))) return kMaskBadCount;  // NaN included
  if (pf > static_cast<float>(L)) return kMaskOverrun;
  const int P = static_cast<int>(pf);
  int64_t o = 1;
  for (int k = 0; k < P; ++k) {
    *bad_polygon = k;
    if (o >= L) return kMaskOverrun;
    const float nf = row[o];
    if (!(nf >= 3.f && nf == floorf(nf))) return kMaskBadVertices;
    if (nf > static_cast<float>(L)) return kMaskOverrun;
    o += 1 + 2 * static_cast<int64_t>(nf);
    if (o > L) return kMaskOverrun;
  }
  *bad_polygon = -1;
  return kMaskOk;
}

// Whether (px, py) lies inside the union of a checked row's polygons, each by the even-odd rule.
SD_HD inline bool row_contains(const float* row, float px, float py) {
  const int P = static_cast<int>(row[0]);
  int64_t o = 1;
  for (int k = 0; k < P; ++k) {
    const int64_t n = static_cast<int64_t>(row[o]);
    const float* pts = row + o + 1;
    bool odd = false;
    float ax = pts[2 * (n - 1)], ay = pts[2 * (n - 1) + 1];
    for (int64_t v = 0; v < n; ++v) {
      const float bx = pts[2 * v], by = pts[2 * v + 1];
      float x;
      if (edge_crossing(ax, ay, bx, by, py, &x) && px < x) odd = !odd;
      ax = bx;
      ay = by;
    }
    if (odd) return true;
    o += 1 + 2 * n;
  }
  return false;
}

// CUDA launcher (mask_target.cu): out (N, M, M) as the CPU path writes it, status (N,) the
// MaskTargetStatus of each roi (rows with an error status are left -1). Device pointers.
void mask_target_gpu(const float* rois, const float* gt_index, const float* gt_polys,
                     int64_t num_rois, int batch, int num_gt, int64_t row_len, int mask_size,
                     float* out, int* status, void* stream);

}  // namespace simpledet

#endif  // SIMPLEDET_MASK_TARGET_H_
