// FPN ROIAlign, CPU implementation and registration as _contrib_FPNROIAlign.
//
// Inputs: rois (N, 5) [batch_idx, x1, y1, x2, y2] in input-image pixels, then one feature map
// per entry of `feature_strides`, each (B, C, H_l, W_l). Output: (N, C, pooled_h, pooled_w).
// Rois with batch_idx < 0 (padding) pool to zeros. Backward scatters into the maps; rois get
// zero gradient.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include "fpn_roi_align.h"
#include "simpledet_op.h"

namespace simpledet {
namespace {

const char* kOpName = "FPNROIAlign";

FPNROIAlignParam parse_param(const Attrs& attrs) {
  FPNROIAlignParam p;
  std::vector<double> strides = attr_list(attrs, "feature_strides", {});
  if (strides.empty() || strides.size() > static_cast<size_t>(kMaxLevels))
    throw AttrError("feature_strides must list 1 to 8 strides, e.g. (4, 8, 16, 32)");
  p.num_levels = static_cast<int>(strides.size());
  for (int i = 0; i < p.num_levels; ++i) {
    double lvl = std::log2(strides[i]);
    if (strides[i] <= 0 || std::fabs(lvl - std::round(lvl)) > 1e-6)
      throw AttrError("feature_strides must be powers of two, got " + std::to_string(strides[i]));
    if (i > 0 && strides[i] <= strides[i - 1])
      throw AttrError("feature_strides must be ascending");
    p.strides[i] = static_cast<float>(strides[i]);
    p.level_ids[i] = static_cast<int>(std::lround(lvl));
  }
  std::vector<double> pooled = attr_list(attrs, "pooled_size", {7, 7});
  if (pooled.size() == 1) pooled.push_back(pooled[0]);
  if (pooled.size() != 2 || pooled[0] < 1 || pooled[1] < 1)
    throw AttrError("pooled_size must be (h, w) with positive entries");
  p.pooled_h = static_cast<int>(pooled[0]);
  p.pooled_w = static_cast<int>(pooled[1]);
  p.sampling_ratio = static_cast<int>(attr_int(attrs, "sampling_ratio", 2));
  p.aligned = attr_bool(attrs, "aligned", false);
  p.canonical_scale = static_cast<float>(attr_double(attrs, "canonical_scale", 224.0));
  p.canonical_level = static_cast<int>(attr_int(attrs, "canonical_level", 4));
  if (p.canonical_scale <= 0) throw AttrError("canonical_scale must be positive");
  return p;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  SIMPLEDET_TRY(kOpName, {
    *num_in = 1 + parse_param(attrs).num_levels;
    *num_out = 1;
    return MX_SUCCESS;
  })
}

MXReturnValue infer_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  int t = in->at(0);
  if (t != kFloat32 && t != kFloat64) {
    MX_ERROR_MSG << kOpName << ": rois must be float32 or float64, got " << dtype_name(t)
                 << " (cast fp16/bf16 features and rois to float32 before this op)";
    return MX_FAIL;
  }
  for (size_t i = 1; i < in->size(); ++i) {
    if (in->at(i) != t) {
      MX_ERROR_MSG << kOpName << ": feature map " << i - 1 << " is " << dtype_name(in->at(i))
                   << " but rois are " << dtype_name(t) << "; all inputs must share one dtype";
      return MX_FAIL;
    }
  }
  out->at(0) = t;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  SIMPLEDET_TRY(kOpName, {
    FPNROIAlignParam p = parse_param(attrs);
    const auto& rois = in->at(0);
    if (rois.size() != 2 || rois[1] != 5) {
      MX_ERROR_MSG << kOpName << ": rois must be (N, 5) [batch_idx, x1, y1, x2, y2], got "
                   << shape_str(rois);
      return MX_FAIL;
    }
    const auto& first = in->at(1);
    for (int l = 0; l < p.num_levels; ++l) {
      const auto& m = in->at(1 + l);
      if (m.size() != 4 || m[0] != first[0] || m[1] != first[1]) {
        MX_ERROR_MSG << kOpName << ": feature map " << l << " must be (B, C, H, W) with the "
                     << "same B and C as map 0 " << shape_str(first) << ", got " << shape_str(m);
        return MX_FAIL;
      }
    }
    out->at(0) = {rois[0], first[1], static_cast<unsigned int>(p.pooled_h),
                  static_cast<unsigned int>(p.pooled_w)};
    return MX_SUCCESS;
  })
}

// Bilinear taps of every sample point, computed once per roi and reused for all channels
// (the sample geometry does not depend on the channel). Weights already include the 1/count
// of the bin average; samples outside the map have zero weight.
struct Tap {
  int32_t idx[4];
  float w[4];
};

struct RoiTaps {
  int level = 0, batch = -1;   // batch < 0: padding roi, pools to zero
  int samples_per_bin = 0;
  int64_t offset = 0;          // first tap of bin 0 in the flat tap array
};

template <typename T>
std::vector<RoiTaps> plan_rois(const T* rois, int64_t n, int batch, const FPNROIAlignParam& p,
                               const std::vector<int>& hs, const std::vector<int>& ws,
                               std::vector<Tap>* taps) {
  std::vector<RoiTaps> plans(n);
  std::vector<RoiGeometry> geoms(n);
  const int64_t bins = static_cast<int64_t>(p.pooled_h) * p.pooled_w;
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* r = rois + i * 5;
    float box[4] = {static_cast<float>(r[1]), static_cast<float>(r[2]),
                    static_cast<float>(r[3]), static_cast<float>(r[4])};
    int b = static_cast<int>(r[0]);
    RoiTaps& pl = plans[i];
    pl.batch = (b >= 0 && b < batch) ? b : -1;
    if (pl.batch < 0) continue;
    pl.level = fpn_assign_level(box, p);
    geoms[i] = roi_geometry(box, p.strides[pl.level], p);
    pl.samples_per_bin = std::max(geoms[i].grid_h * geoms[i].grid_w, 0);
    pl.offset = total;
    total += bins * pl.samples_per_bin;
  }
  taps->assign(total, Tap{});
  parallel_for(n, [&](int64_t i) {
    const RoiTaps& pl = plans[i];
    if (pl.batch < 0 || pl.samples_per_bin == 0) return;
    const RoiGeometry& g = geoms[i];
    const int h = hs[pl.level], w = ws[pl.level];
    const float inv_count = 1.f / pl.samples_per_bin;
    Tap* out = taps->data() + pl.offset;
    for (int ph = 0; ph < p.pooled_h; ++ph) {
      for (int pw = 0; pw < p.pooled_w; ++pw) {
        for (int iy = 0; iy < g.grid_h; ++iy) {
          float y = g.start_h + ph * g.bin_h + (iy + .5f) * g.bin_h / g.grid_h;
          for (int ix = 0; ix < g.grid_w; ++ix, ++out) {
            float x = g.start_w + pw * g.bin_w + (ix + .5f) * g.bin_w / g.grid_w;
            BilinearTap t = bilinear_tap(y, x, h, w);
            if (!t.valid) continue;  // stays {0 indices, 0 weights}
            for (int k = 0; k < 4; ++k) {
              out->idx[k] = t.idx[k];
              out->w[k] = t.w[k] * inv_count;
            }
          }
        }
      }
    }
  });
  return plans;
}

// ----------------------------------------------------------------------------------------------
// Forward. The sampling grid of a roi is separable: sample (iy, ix) of bin (ph, pw) sits at row
// coordinate y(ph, iy) and column coordinate x(pw, ix), and bilinear_tap's corners and weights
// are products of a row part (y_low/y_high, hy/ly) and a column part (x_low/x_high, hx/lx).
// So the pixels a roi reads are (touched rows) x (touched columns). Per roi we
//   1. compute the 1-D taps of its rows and columns (same arithmetic as bilinear_tap),
//   2. gather those rows' column span (or, for sparse columns, the touched columns) of every
//      channel into a channels-last buffer: each row segment is contiguous in NCHW, so this is a
//      blocked transpose of short contiguous runs rather than a per-pixel strided gather,
//   3. pool every bin over all channels at once from that buffer (taps in bilinear_tap order,
//      weight (hy*hx)/count etc., zero weights skipped), so results equal a per-sample
//      evaluation of bilinear_tap bit for bit.

// One axis of bilinear_tap, with the same arithmetic.
struct AxisTap {
  int low, high;
  float lo_w, hi_w;  // weights of low and high: (1 - frac, frac)
  bool valid;
};

inline AxisTap axis_tap(float v, int size) {
  AxisTap a;
  a.valid = !(v < -1.f || v > size);
  a.low = a.high = 0;
  a.lo_w = a.hi_w = 0.f;
  if (!a.valid) return a;
  if (v <= 0.f) v = 0.f;
  int low = static_cast<int>(v), high;
  if (low >= size - 1) {
    high = low = size - 1;
    v = static_cast<float>(low);
  } else {
    high = low + 1;
  }
  a.low = low;
  a.high = high;
  a.hi_w = v - low;
  a.lo_w = 1.f - a.hi_w;
  return a;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define SIMDCLONES __attribute__((target_clones("avx2", "default")))
#else
#define SIMDCLONES
#endif

// Pools one bin for all channels: out[c * stride] = sum_t w[t] * g[off[t] + c], summed in t
// order starting from +0 (as a scalar loop would), for channel blocks held in registers.
// GCC vector extensions: native 256-bit in the AVX2 clone, pairs of SSE2 ops otherwise.
typedef float v8sf __attribute__((vector_size(32)));
typedef float v8sf_u __attribute__((vector_size(32), aligned(4), may_alias));
typedef double v4df __attribute__((vector_size(32)));
typedef double v4df_u __attribute__((vector_size(32), aligned(8), may_alias));

#define SD_POOL_BIN_BODY(T, V, VU, LANES)                                                     \
  int c0 = 0;                                                                                 \
  for (; c0 + 8 * LANES <= channels; c0 += 8 * LANES) {                                       \
    V a0 = {}, a1 = {}, a2 = {}, a3 = {}, a4 = {}, a5 = {}, a6 = {}, a7 = {};                 \
    for (int t = 0; t < n; ++t) {                                                             \
      const T* s = g + off[t] + c0;                                                           \
      const T wt = static_cast<T>(w[t]);                                                      \
      a0 += wt * *reinterpret_cast<const VU*>(s);                                             \
      a1 += wt * *reinterpret_cast<const VU*>(s + LANES);                                     \
      a2 += wt * *reinterpret_cast<const VU*>(s + 2 * LANES);                                 \
      a3 += wt * *reinterpret_cast<const VU*>(s + 3 * LANES);                                 \
      a4 += wt * *reinterpret_cast<const VU*>(s + 4 * LANES);                                 \
      a5 += wt * *reinterpret_cast<const VU*>(s + 5 * LANES);                                 \
      a6 += wt * *reinterpret_cast<const VU*>(s + 6 * LANES);                                 \
      a7 += wt * *reinterpret_cast<const VU*>(s + 7 * LANES);                                 \
    }                                                                                         \
    V acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};                                              \
    T* o = out + static_cast<int64_t>(c0) * stride;                                           \
    for (int v = 0; v < 8; ++v)                                                               \
      for (int i = 0; i < LANES; ++i) o[(v * LANES + i) * stride] = acc[v][i];               \
  }                                                                                           \
  for (; c0 + LANES <= channels; c0 += LANES) {                                               \
    V a = {};                                                                                 \
    for (int t = 0; t < n; ++t)                                                               \
      a += static_cast<T>(w[t]) * *reinterpret_cast<const VU*>(g + off[t] + c0);              \
    for (int i = 0; i < LANES; ++i) out[static_cast<int64_t>(c0 + i) * stride] = a[i];       \
  }                                                                                           \
  for (; c0 < channels; ++c0) {                                                               \
    T a = 0;                                                                                  \
    for (int t = 0; t < n; ++t) a += static_cast<T>(w[t]) * g[off[t] + c0];                   \
    out[static_cast<int64_t>(c0) * stride] = a;                                               \
  }

SIMDCLONES void pool_bin(const float* __restrict g, int channels, const int64_t* off,
                         const float* w, int n, float* __restrict out, int64_t stride) {
  SD_POOL_BIN_BODY(float, v8sf, v8sf_u, 8)
}
SIMDCLONES void pool_bin(const double* __restrict g, int channels, const int64_t* off,
                         const float* w, int n, double* __restrict out, int64_t stride) {
  SD_POOL_BIN_BODY(double, v4df, v4df_u, 4)
}
#undef SD_POOL_BIN_BODY

// dst[(r * len + j) * channels + c] = src[c * plane + rows[r] + j]: the column span of each
// gathered row, all channels, transposed to channels-last. 4x4 SSE2 transposes for float.
template <typename T>
void gather_spans(const T* src, int64_t plane, int channels, const int64_t* rows, int nrows,
                  int len, T* dst) {
  constexpr int kBlock = 16;
  for (int r = 0; r < nrows; ++r) {
    T* d = dst + static_cast<int64_t>(r) * len * channels;
    for (int c0 = 0; c0 < channels; c0 += kBlock) {
      const int c1 = std::min(channels, c0 + kBlock);
      for (int j = 0; j < len; ++j)
        for (int c = c0; c < c1; ++c)
          d[static_cast<int64_t>(j) * channels + c] = src[c * plane + rows[r] + j];
    }
  }
}

#if defined(__SSE2__)
template <>
void gather_spans<float>(const float* src, int64_t plane, int channels, const int64_t* rows,
                         int nrows, int len, float* dst) {
  for (int r = 0; r < nrows; ++r) {
    float* d = dst + static_cast<int64_t>(r) * len * channels;
    int c = 0;
    for (; c + 4 <= channels; c += 4) {
      const float* p0 = src + c * plane + rows[r];
      const float* p1 = p0 + plane;
      const float* p2 = p1 + plane;
      const float* p3 = p2 + plane;
      if (c + 12 <= channels) {  // the segments two blocks ahead
        for (int k = 8; k < 12; ++k) {
          __builtin_prefetch(p0 + k * plane);
          __builtin_prefetch(p0 + k * plane + len - 1);
        }
      }
      int j = 0;
      for (; j + 4 <= len; j += 4) {
        __m128 a0 = _mm_loadu_ps(p0 + j), a1 = _mm_loadu_ps(p1 + j);
        __m128 a2 = _mm_loadu_ps(p2 + j), a3 = _mm_loadu_ps(p3 + j);
        _MM_TRANSPOSE4_PS(a0, a1, a2, a3);
        float* o = d + static_cast<int64_t>(j) * channels + c;
        _mm_storeu_ps(o, a0);
        _mm_storeu_ps(o + channels, a1);
        _mm_storeu_ps(o + 2 * channels, a2);
        _mm_storeu_ps(o + 3 * channels, a3);
      }
      for (; j < len; ++j) {
        float* o = d + static_cast<int64_t>(j) * channels + c;
        o[0] = p0[j];
        o[1] = p1[j];
        o[2] = p2[j];
        o[3] = p3[j];
      }
    }
    for (; c < channels; ++c)
      for (int j = 0; j < len; ++j)
        d[static_cast<int64_t>(j) * channels + c] = src[c * plane + rows[r] + j];
  }
}
#endif

// dst[(r * ncols + j) * channels + c] = src[c * plane + rows[r] + cols[j]]: sparse columns.
template <typename T>
void gather_points(const T* src, int64_t plane, int channels, const int64_t* rows, int nrows,
                   const int* cols, int ncols, T* dst) {
  constexpr int kBlock = 16;
  for (int r = 0; r < nrows; ++r) {
    T* d = dst + static_cast<int64_t>(r) * ncols * channels;
    for (int c0 = 0; c0 < channels; c0 += kBlock) {
      const int c1 = std::min(channels, c0 + kBlock);
      for (int j = 0; j < ncols; ++j) {
        const T* s = src + rows[r] + cols[j];
        for (int c = c0; c < c1; ++c) d[static_cast<int64_t>(j) * channels + c] = s[c * plane];
      }
    }
  }
}

// The taps of one axis of a roi: n = pooled * grid samples, in (bin, sub-sample) order, and the
// slot of every touched coordinate among the gathered ones.
struct AxisPlan {
  std::vector<AxisTap> taps;
  std::vector<int> slot;   // slot[coord - first], -1 when not gathered
  std::vector<int> coords; // gathered coordinates, ascending
  int first = 0, span = 0, count = 0;
  bool any_valid = false;

  void build(float start, float bin, int grid, int pooled, int size) {
    taps.resize(static_cast<size_t>(pooled) * grid);
    int lo = size, hi = -1;
    any_valid = false;
    for (int p = 0, t = 0; p < pooled; ++p) {
      for (int i = 0; i < grid; ++i, ++t) {
        float v = start + p * bin + (i + .5f) * bin / grid;
        taps[t] = axis_tap(v, size);
        if (!taps[t].valid) continue;
        any_valid = true;
        lo = std::min(lo, taps[t].low);
        hi = std::max(hi, taps[t].high);
      }
    }
    if (!any_valid) return;
    first = lo;
    span = hi - lo + 1;
    slot.assign(span, -1);
    for (const AxisTap& a : taps) {
      if (!a.valid) continue;
      slot[a.low - first] = 0;
      slot[a.high - first] = 0;
    }
    coords.clear();
    for (int k = 0; k < span; ++k)
      if (slot[k] == 0) {
        slot[k] = static_cast<int>(coords.size());
        coords.push_back(first + k);
      }
    count = static_cast<int>(coords.size());
  }
};

template <typename T>
void forward_cpu(const T* rois, int64_t n, const std::vector<const T*>& maps,
                 const std::vector<int>& hs, const std::vector<int>& ws, int batch,
                 int channels, const FPNROIAlignParam& p, T* out) {
  const int64_t bins = static_cast<int64_t>(p.pooled_h) * p.pooled_w;
  // Visit rois grouped by (level, image, top edge) so that rois running close together in time
  // share cache lines of the maps; each roi writes only its own output, so the order does not
  // change any result.
  std::vector<int64_t> order(n);
  {
    std::vector<std::pair<int64_t, float>> keys(n);
    for (int64_t i = 0; i < n; ++i) {
      const T* r = rois + i * 5;
      float box[4] = {static_cast<float>(r[1]), static_cast<float>(r[2]),
                      static_cast<float>(r[3]), static_cast<float>(r[4])};
      const int b = static_cast<int>(r[0]);
      const int64_t group = (b >= 0 && b < batch) ? fpn_assign_level(box, p) * int64_t(batch) + b
                                                  : -1;
      keys[i] = {group, std::isfinite(box[1]) ? box[1] : 0.f};  // NaN would break the sort
      order[i] = i;
    }
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t c) {
      return keys[a].first != keys[c].first ? keys[a].first < keys[c].first
                                            : keys[a].second < keys[c].second;
    });
  }
#pragma omp parallel if (n > 1)
  {
    AxisPlan ys, xs;
    std::vector<int64_t> row_start;
    std::vector<int64_t> off;
    std::vector<float> wts;
    std::vector<int> bin_taps;
    std::vector<T> gathered;
#pragma omp for schedule(dynamic, 1)
    for (int64_t visit = 0; visit < n; ++visit) {
      const int64_t i = order[visit];
      T* dst = out + i * channels * bins;
      const T* r = rois + i * 5;
      float box[4] = {static_cast<float>(r[1]), static_cast<float>(r[2]),
                      static_cast<float>(r[3]), static_cast<float>(r[4])};
      const int b = static_cast<int>(r[0]);
      if (!(b >= 0 && b < batch)) {
        std::fill_n(dst, channels * bins, T(0));
        continue;
      }
      const int level = fpn_assign_level(box, p);
      const RoiGeometry g = roi_geometry(box, p.strides[level], p);
      const int h = hs[level], w = ws[level];
      if (g.grid_h <= 0 || g.grid_w <= 0 || h <= 0 || w <= 0) {
        std::fill_n(dst, channels * bins, T(0));
        continue;
      }
      ys.build(g.start_h, g.bin_h, g.grid_h, p.pooled_h, h);
      xs.build(g.start_w, g.bin_w, g.grid_w, p.pooled_w, w);
      if (!ys.any_valid || !xs.any_valid) {
        std::fill_n(dst, channels * bins, T(0));
        continue;
      }
      // Columns: the contiguous span unless it is much wider than the touched columns.
      const bool dense = xs.span <= 2 * xs.count + 4;
      const int row_len = dense ? xs.span : xs.count;
      auto col_slot = [&](int x) { return dense ? x - xs.first : xs.slot[x - xs.first]; };
      auto row_slot = [&](int y) { return ys.slot[y - ys.first]; };

      // Taps of every bin, in bilinear_tap order, as offsets into the gathered buffer.
      const float inv_count = 1.f / (g.grid_h * g.grid_w);
      const int max_taps = g.grid_h * g.grid_w * 4;
      off.resize(bins * max_taps);
      wts.resize(bins * max_taps);
      bin_taps.resize(bins);
      for (int ph = 0; ph < p.pooled_h; ++ph) {
        for (int pw = 0; pw < p.pooled_w; ++pw) {
          const int64_t bin = ph * p.pooled_w + pw;
          int64_t* o = off.data() + bin * max_taps;
          float* wt = wts.data() + bin * max_taps;
          int nt = 0;
          for (int iy = 0; iy < g.grid_h; ++iy) {
            const AxisTap& ay = ys.taps[ph * g.grid_h + iy];
            for (int ix = 0; ix < g.grid_w; ++ix) {
              const AxisTap& ax = xs.taps[pw * g.grid_w + ix];
              if (!ay.valid || !ax.valid) continue;
              const int rows[4] = {ay.low, ay.low, ay.high, ay.high};
              const int cols[4] = {ax.low, ax.high, ax.low, ax.high};
              const float tw[4] = {ay.lo_w * ax.lo_w, ay.lo_w * ax.hi_w, ay.hi_w * ax.lo_w,
                                   ay.hi_w * ax.hi_w};
              for (int k = 0; k < 4; ++k) {
                const float wk = tw[k] * inv_count;
                if (wk == 0.f) continue;
                o[nt] = (static_cast<int64_t>(row_slot(rows[k])) * row_len +
                         col_slot(cols[k])) * channels;
                wt[nt] = wk;
                ++nt;
              }
            }
          }
          bin_taps[bin] = nt;
        }
      }

      const int64_t plane = static_cast<int64_t>(h) * w;
      const T* src = maps[level] + static_cast<int64_t>(b) * plane * channels;
      row_start.resize(ys.count);
      for (int k = 0; k < ys.count; ++k)
        row_start[k] = static_cast<int64_t>(ys.coords[k]) * w + (dense ? xs.first : 0);
      gathered.resize(static_cast<size_t>(ys.count) * row_len * channels);
      if (dense)
        gather_spans<T>(src, plane, channels, row_start.data(), ys.count, row_len,
                        gathered.data());
      else
        gather_points<T>(src, plane, channels, row_start.data(), ys.count, xs.coords.data(),
                         xs.count, gathered.data());
      for (int64_t bin = 0; bin < bins; ++bin)
        pool_bin(gathered.data(), channels, off.data() + bin * max_taps,
                 wts.data() + bin * max_taps, bin_taps[bin], dst + bin, bins);
    }
  }
}

// Scatter is parallel over channels: each thread owns its channel planes, so no atomics.
template <typename T>
void backward_cpu(const T* rois, int64_t n, const T* grad_out, const std::vector<T*>& grads,
                  const std::vector<int>& hs, const std::vector<int>& ws, int batch,
                  int channels, const FPNROIAlignParam& p) {
  std::vector<Tap> taps;
  std::vector<RoiTaps> plans = plan_rois(rois, n, batch, p, hs, ws, &taps);
  const int64_t bins = static_cast<int64_t>(p.pooled_h) * p.pooled_w;
  parallel_for(channels, [&](int64_t c) {
    for (int64_t i = 0; i < n; ++i) {
      const RoiTaps& pl = plans[i];
      if (pl.batch < 0) continue;
      const int64_t plane = static_cast<int64_t>(hs[pl.level]) * ws[pl.level];
      T* dst = grads[pl.level] + (static_cast<int64_t>(pl.batch) * channels + c) * plane;
      const T* top = grad_out + (i * channels + c) * bins;
      const Tap* tap = taps.data() + pl.offset;
      for (int64_t bin = 0; bin < bins; ++bin) {
        const T diff = top[bin];
        for (int s = 0; s < pl.samples_per_bin; ++s, ++tap)
          for (int k = 0; k < 4; ++k) dst[tap->idx[k]] += tap->w[k] * diff;
      }
    }
  });
}

struct Dims {
  int64_t num_rois;
  int batch, channels;
  std::vector<int> hs, ws;
};

// Inputs of forward: rois, maps...; of backward: grad_out, rois, maps..., out.
Dims read_dims(const std::vector<MXTensor>& in, size_t first_map, int levels) {
  Dims d;
  d.num_rois = in[first_map - 1].shape[0];
  d.batch = static_cast<int>(in[first_map].shape[0]);
  d.channels = static_cast<int>(in[first_map].shape[1]);
  for (int l = 0; l < levels; ++l) {
    d.hs.push_back(static_cast<int>(in[first_map + l].shape[2]));
    d.ws.push_back(static_cast<int>(in[first_map + l].shape[3]));
  }
  return d;
}

template <typename T>
void run_forward_cpu(const FPNROIAlignParam& p, std::vector<MXTensor>* in,
                     std::vector<MXTensor>* out) {
  Dims d = read_dims(*in, 1, p.num_levels);
  std::vector<const T*> maps;
  for (int l = 0; l < p.num_levels; ++l) maps.push_back(in->at(1 + l).data<T>());
  forward_cpu<T>(in->at(0).data<T>(), d.num_rois, maps, d.hs, d.ws, d.batch, d.channels, p,
                 out->at(0).data<T>());
}

template <typename T>
void run_backward_cpu(const FPNROIAlignParam& p, std::vector<MXTensor>* in,
                      std::vector<MXTensor>* out) {
  Dims d = read_dims(*in, 2, p.num_levels);
  std::vector<T*> grads;
  for (auto& t : *out) std::fill_n(t.data<T>(), t.size(), T(0));
  for (int l = 0; l < p.num_levels; ++l) grads.push_back(out->at(1 + l).data<T>());
  backward_cpu<T>(in->at(1).data<T>(), d.num_rois, in->at(0).data<T>(), grads, d.hs, d.ws,
                  d.batch, d.channels, p);
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource&) {
  SIMPLEDET_TRY(kOpName, {
    FPNROIAlignParam p = parse_param(attrs);
    if (in->at(0).dtype == kFloat64) run_forward_cpu<double>(p, in, out);
    else run_forward_cpu<float>(p, in, out);
    return MX_SUCCESS;
  })
}

MXReturnValue backward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                       const OpResource&) {
  SIMPLEDET_TRY(kOpName, {
    FPNROIAlignParam p = parse_param(attrs);
    if (in->at(1).dtype == kFloat64) run_backward_cpu<double>(p, in, out);
    else run_backward_cpu<float>(p, in, out);
    return MX_SUCCESS;
  })
}

#ifdef SIMPLEDET_WITH_CUDA
template <typename T>
void run_gpu(const FPNROIAlignParam& p, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
             const OpResource& res, bool is_backward) {
  size_t first_map = is_backward ? 2 : 1;
  Dims d = read_dims(*in, first_map, p.num_levels);
  std::vector<T*> maps;
  for (int l = 0; l < p.num_levels; ++l)
    maps.push_back(is_backward ? out->at(1 + l).data<T>() : in->at(1 + l).data<T>());
  void* stream = res.get_cuda_stream();
  if (!is_backward) {
    fpn_roi_align_forward_gpu<T>(in->at(0).data<T>(), d.num_rois, maps.data(), d.hs.data(),
                                 d.ws.data(), d.batch, d.channels, p, out->at(0).data<T>(),
                                 stream);
  } else {
    for (auto& t : *out) cuda::zero_async(t.data_ptr, t.size() * sizeof(T), stream);
    fpn_roi_align_backward_gpu<T>(in->at(1).data<T>(), d.num_rois, in->at(0).data<T>(),
                                  maps.data(), d.hs.data(), d.ws.data(), d.batch, d.channels,
                                  p, stream);
  }
}

MXReturnValue forward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                          std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    FPNROIAlignParam p = parse_param(attrs);
    if (in->at(0).dtype == kFloat64) run_gpu<double>(p, in, out, res, false);
    else run_gpu<float>(p, in, out, res, false);
    return MX_SUCCESS;
  })
}

MXReturnValue backward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                           std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    FPNROIAlignParam p = parse_param(attrs);
    if (in->at(1).dtype == kFloat64) run_gpu<double>(p, in, out, res, true);
    else run_gpu<float>(p, in, out, res, true);
    return MX_SUCCESS;
  })
}
#endif

}  // namespace
}  // namespace simpledet

REGISTER_OP(_contrib_FPNROIAlign)
    .setParseAttrs(simpledet::parse_attrs)
    .setInferType(simpledet::infer_type)
    .setInferShape(simpledet::infer_shape)
    .setForward(simpledet::forward, "cpu")
    .setBackward(simpledet::backward, "cpu")
#ifdef SIMPLEDET_WITH_CUDA
    .setForward(simpledet::forward_gpu, "gpu")
    .setBackward(simpledet::backward_gpu, "gpu")
#endif
    ;  // NOLINT
