// FPN ROIAlign, CPU implementation and registration as _contrib_FPNROIAlign.
//
// Inputs: rois (N, 5) [batch_idx, x1, y1, x2, y2] in input-image pixels, then one feature map
// per entry of `feature_strides`, each (B, C, H_l, W_l). Output: (N, C, pooled_h, pooled_w).
// Rois with batch_idx < 0 (padding) pool to zeros. Backward scatters into the maps; rois get
// zero gradient.
#include <cmath>
#include <string>
#include <vector>

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

// a[i] += w * v[i]: the forward's inner loop, cloned for AVX2 where the CPU has it (the build
// otherwise targets baseline x86-64, i.e. SSE2 only).
#if defined(__x86_64__) && defined(__GNUC__)
#define SIMPLEDET_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SIMPLEDET_VECTOR_CLONES
#endif
SIMPLEDET_VECTOR_CLONES void axpy(float* __restrict a, const float* __restrict v, float w,
                                  int n) {
  for (int i = 0; i < n; ++i) a[i] += w * v[i];
}
SIMPLEDET_VECTOR_CLONES void axpy(double* __restrict a, const double* __restrict v, double w,
                                  int n) {
  for (int i = 0; i < n; ++i) a[i] += w * v[i];
}

// Forward, per roi: gather the (at most bins * samples * 4) distinct map pixels its taps read
// into a channels-last buffer, then accumulate every bin over all channels at once, so the
// channel loop is contiguous and vectorises. Gathering only touched pixels keeps the cost
// proportional to the samples, not to the roi's area on the map.
template <typename T>
void forward_cpu(const T* rois, int64_t n, const std::vector<const T*>& maps,
                 const std::vector<int>& hs, const std::vector<int>& ws, int batch,
                 int channels, const FPNROIAlignParam& p, T* out) {
  std::vector<Tap> taps;
  std::vector<RoiTaps> plans = plan_rois(rois, n, batch, p, hs, ws, &taps);
  const int64_t bins = static_cast<int64_t>(p.pooled_h) * p.pooled_w;
  parallel_for(n, [&](int64_t i) {
    const RoiTaps& pl = plans[i];
    T* dst = out + i * channels * bins;
    if (pl.batch < 0) {
      std::fill_n(dst, channels * bins, T(0));
      return;
    }
    const int64_t plane = static_cast<int64_t>(hs[pl.level]) * ws[pl.level];
    const T* src = maps[pl.level] + pl.batch * plane * channels;
    const Tap* roi_taps = taps.data() + pl.offset;
    const int64_t num_taps = bins * pl.samples_per_bin;
    // Distinct pixels read by this roi, and each tap corner's slot among them.
    std::vector<int32_t> pixels;
    pixels.reserve(num_taps * 4);
    for (int64_t t = 0; t < num_taps; ++t)
      for (int k = 0; k < 4; ++k) pixels.push_back(roi_taps[t].idx[k]);
    std::sort(pixels.begin(), pixels.end());
    pixels.erase(std::unique(pixels.begin(), pixels.end()), pixels.end());
    std::vector<int32_t> slot(num_taps * 4);
    for (int64_t t = 0; t < num_taps * 4; ++t)
      slot[t] = static_cast<int32_t>(
          std::lower_bound(pixels.begin(), pixels.end(), roi_taps[t / 4].idx[t % 4]) -
          pixels.begin());
    const int64_t num_pixels = static_cast<int64_t>(pixels.size());
    std::vector<T> gathered(num_pixels * channels);  // (pixels, C)
    // Pixels are sorted, so neighbours share the cache lines of each channel plane; blocks of
    // 16 channels keep both the 16 source lines and the written line in L1.
    constexpr int kBlock = 16;
    for (int c0 = 0; c0 < channels; c0 += kBlock) {
      const int c1 = std::min(channels, c0 + kBlock);
      for (int64_t u = 0; u < num_pixels; ++u) {
        T* g = gathered.data() + u * channels;
        const T* s = src + pixels[u];
        for (int c = c0; c < c1; ++c) g[c] = s[c * plane];
      }
    }
    std::vector<T> acc(bins * channels, T(0));  // (bins, C)
    for (int64_t bin = 0, t = 0; bin < bins; ++bin) {
      T* a = acc.data() + bin * channels;
      for (int s = 0; s < pl.samples_per_bin; ++s, ++t) {
        for (int k = 0; k < 4; ++k) {
          const T wk = roi_taps[t].w[k];
          if (wk == T(0)) continue;
          axpy(a, gathered.data() + static_cast<int64_t>(slot[t * 4 + k]) * channels, wk,
               channels);
        }
      }
    }
    for (int c = 0; c < channels; ++c)
      for (int64_t bin = 0; bin < bins; ++bin) dst[c * bins + bin] = acc[bin * channels + c];
  });
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
