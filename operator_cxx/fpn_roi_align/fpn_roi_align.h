// FPN ROIAlign: per-roi level assignment plus bilinear ROIAlign, shared by the CPU (.cc) and
// CUDA (.cu) implementations. Sampling follows MXNet's contrib.ROIAlign exactly, so with a
// single feature map the op equals contrib.ROIAlign(spatial_scale=1/stride).
#ifndef SIMPLEDET_FPN_ROI_ALIGN_H_
#define SIMPLEDET_FPN_ROI_ALIGN_H_

#include <cmath>
#include <cstdint>

#include "box_utils.h"

namespace simpledet {

constexpr int kMaxLevels = 8;

struct FPNROIAlignParam {
  int num_levels;
  float strides[kMaxLevels];      // feature stride of each input map, ascending
  int level_ids[kMaxLevels];      // log2(stride) of each map
  int pooled_h, pooled_w;
  int sampling_ratio;             // <= 0: adaptive, ceil(roi_size / pooled_size)
  bool aligned;                   // half-pixel offset (detectron2's aligned=True)
  float canonical_scale;          // roi of this size (sqrt of area) maps to canonical_level
  int canonical_level;
};

// Index (0..num_levels-1) of the map a roi is pooled from: floor(k0 + log2(sqrt(area)/s0)),
// clamped to the available levels. Area uses the +1 convention of the other ops.
SD_HD inline int fpn_assign_level(const float* box, const FPNROIAlignParam& p) {
  if (p.num_levels == 1) return 0;
  float w = box[2] - box[0] + 1.f, h = box[3] - box[1] + 1.f;
  float size = sqrtf(fmaxf(w * h, 1e-6f));
  int lvl = static_cast<int>(floorf(p.canonical_level + log2f(size / p.canonical_scale + 1e-6f)));
  int lo = p.level_ids[0], hi = p.level_ids[p.num_levels - 1];
  lvl = lvl < lo ? lo : (lvl > hi ? hi : lvl);
  for (int i = 0; i < p.num_levels; ++i)
    if (p.level_ids[i] == lvl) return i;
  return 0;
}

// Bilinear weights and corner indices for sample point (y, x) on an (h, w) map, following
// contrib.ROIAlign: points more than one pixel outside the map contribute nothing.
struct BilinearTap {
  int idx[4];
  float w[4];
  bool valid;
};

SD_HD inline BilinearTap bilinear_tap(float y, float x, int height, int width) {
  BilinearTap t;
  if (y < -1.f || y > height || x < -1.f || x > width) {
    t.valid = false;
    return t;
  }
  t.valid = true;
  if (y <= 0.f) y = 0.f;
  if (x <= 0.f) x = 0.f;
  int y_low = static_cast<int>(y), x_low = static_cast<int>(x), y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<float>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<float>(x_low);
  } else {
    x_high = x_low + 1;
  }
  float ly = y - y_low, lx = x - x_low, hy = 1.f - ly, hx = 1.f - lx;
  t.idx[0] = y_low * width + x_low;
  t.idx[1] = y_low * width + x_high;
  t.idx[2] = y_high * width + x_low;
  t.idx[3] = y_high * width + x_high;
  t.w[0] = hy * hx;
  t.w[1] = hy * lx;
  t.w[2] = ly * hx;
  t.w[3] = ly * lx;
  return t;
}

// Geometry of one roi on its map: start, bin size and sampling grid.
struct RoiGeometry {
  float start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;
};

SD_HD inline RoiGeometry roi_geometry(const float* box, float stride,
                                      const FPNROIAlignParam& p) {
  RoiGeometry g;
  float scale = 1.f / stride, offset = p.aligned ? 0.5f : 0.f;
  g.start_w = box[0] * scale - offset;
  g.start_h = box[1] * scale - offset;
  float roi_w = box[2] * scale - offset - g.start_w;
  float roi_h = box[3] * scale - offset - g.start_h;
  if (!p.aligned) {
    roi_w = fmaxf(roi_w, 1.f);
    roi_h = fmaxf(roi_h, 1.f);
  }
  g.bin_h = roi_h / p.pooled_h;
  g.bin_w = roi_w / p.pooled_w;
  g.grid_h = p.sampling_ratio > 0 ? p.sampling_ratio : static_cast<int>(ceilf(roi_h / p.pooled_h));
  g.grid_w = p.sampling_ratio > 0 ? p.sampling_ratio : static_cast<int>(ceilf(roi_w / p.pooled_w));
  return g;
}

// Launchers of the CUDA implementation (fpn_roi_align.cu); `maps`/`grad_maps` hold one device
// pointer per level, `heights`/`widths` their spatial sizes. T is float or double.
template <typename T>
void fpn_roi_align_forward_gpu(const T* rois, int64_t num_rois, const T* const* maps,
                               const int* heights, const int* widths, int batch, int channels,
                               const FPNROIAlignParam& p, T* out, void* stream);
template <typename T>
void fpn_roi_align_backward_gpu(const T* rois, int64_t num_rois, const T* grad_out,
                                T* const* grad_maps, const int* heights, const int* widths,
                                int batch, int channels, const FPNROIAlignParam& p, void* stream);

}  // namespace simpledet

#endif  // SIMPLEDET_FPN_ROI_ALIGN_H_
