// FPN ROIAlign, CUDA kernels. Same arithmetic as the CPU path (fpn_roi_align.h); the backward
// scatters with atomicAdd. Level pointers and sizes travel by value in the kernel arguments.
#include <cuda_runtime.h>

#include "fpn_roi_align.h"

namespace simpledet {
namespace {

template <typename T>
struct LevelMaps {
  T* ptr[kMaxLevels];
  int h[kMaxLevels];
  int w[kMaxLevels];
};

template <typename T>
__device__ inline bool roi_setup(const T* rois, int64_t i, int batch,
                                 const FPNROIAlignParam& p, int* level, int* b, RoiGeometry* g) {
  const T* r = rois + i * 5;
  float box[4] = {static_cast<float>(r[1]), static_cast<float>(r[2]), static_cast<float>(r[3]),
                  static_cast<float>(r[4])};
  *b = static_cast<int>(r[0]);
  if (*b < 0 || *b >= batch) return false;
  *level = fpn_assign_level(box, p);
  *g = roi_geometry(box, p.strides[*level], p);
  return true;
}

template <typename T>
__global__ void forward_kernel(const T* rois, int64_t total, LevelMaps<T> maps, int batch,
                               int channels, FPNROIAlignParam p, T* out) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int pw = idx % p.pooled_w;
    int ph = (idx / p.pooled_w) % p.pooled_h;
    int c = (idx / p.pooled_w / p.pooled_h) % channels;
    int64_t i = idx / p.pooled_w / p.pooled_h / channels;
    int level, b;
    RoiGeometry g;
    if (!roi_setup(rois, i, batch, p, &level, &b, &g)) {
      out[idx] = T(0);
      continue;
    }
    int h = maps.h[level], w = maps.w[level];
    const T* src = maps.ptr[level] + (static_cast<int64_t>(b) * channels + c) * h * w;
    T sum = 0;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      float y = g.start_h + ph * g.bin_h + (iy + .5f) * g.bin_h / g.grid_h;
      for (int ix = 0; ix < g.grid_w; ++ix) {
        float x = g.start_w + pw * g.bin_w + (ix + .5f) * g.bin_w / g.grid_w;
        BilinearTap t = bilinear_tap(y, x, h, w);
        if (!t.valid) continue;
        for (int k = 0; k < 4; ++k) sum += static_cast<T>(t.w[k]) * src[t.idx[k]];
      }
    }
    out[idx] = sum / static_cast<T>(max(g.grid_h * g.grid_w, 1));
  }
}

template <typename T>
__global__ void backward_kernel(const T* rois, int64_t total, const T* grad_out,
                                LevelMaps<T> grads, int batch, int channels,
                                FPNROIAlignParam p) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int pw = idx % p.pooled_w;
    int ph = (idx / p.pooled_w) % p.pooled_h;
    int c = (idx / p.pooled_w / p.pooled_h) % channels;
    int64_t i = idx / p.pooled_w / p.pooled_h / channels;
    int level, b;
    RoiGeometry g;
    if (!roi_setup(rois, i, batch, p, &level, &b, &g)) continue;
    int h = grads.h[level], w = grads.w[level];
    T* dst = grads.ptr[level] + (static_cast<int64_t>(b) * channels + c) * h * w;
    T diff = grad_out[idx] / static_cast<T>(max(g.grid_h * g.grid_w, 1));
    for (int iy = 0; iy < g.grid_h; ++iy) {
      float y = g.start_h + ph * g.bin_h + (iy + .5f) * g.bin_h / g.grid_h;
      for (int ix = 0; ix < g.grid_w; ++ix) {
        float x = g.start_w + pw * g.bin_w + (ix + .5f) * g.bin_w / g.grid_w;
        BilinearTap t = bilinear_tap(y, x, h, w);
        if (!t.valid) continue;
        for (int k = 0; k < 4; ++k) atomicAdd(dst + t.idx[k], static_cast<T>(t.w[k]) * diff);
      }
    }
  }
}

template <typename T>
LevelMaps<T> pack(T* const* ptrs, const int* hs, const int* ws, int levels) {
  LevelMaps<T> m;
  for (int l = 0; l < levels; ++l) {
    m.ptr[l] = ptrs[l];
    m.h[l] = hs[l];
    m.w[l] = ws[l];
  }
  return m;
}

int blocks_for(int64_t total) {
  int64_t b = (total + 255) / 256;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

}  // namespace

template <typename T>
void fpn_roi_align_forward_gpu(const T* rois, int64_t num_rois, const T* const* maps,
                               const int* heights, const int* widths, int batch, int channels,
                               const FPNROIAlignParam& p, T* out, void* stream) {
  int64_t total = num_rois * channels * p.pooled_h * p.pooled_w;
  if (total == 0) return;
  LevelMaps<T> m = pack(const_cast<T* const*>(maps), heights, widths, p.num_levels);
  forward_kernel<T><<<blocks_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      rois, total, m, batch, channels, p, out);
}

template <typename T>
void fpn_roi_align_backward_gpu(const T* rois, int64_t num_rois, const T* grad_out,
                                T* const* grad_maps, const int* heights, const int* widths,
                                int batch, int channels, const FPNROIAlignParam& p,
                                void* stream) {
  int64_t total = num_rois * channels * p.pooled_h * p.pooled_w;
  if (total == 0) return;
  LevelMaps<T> m = pack(grad_maps, heights, widths, p.num_levels);
  backward_kernel<T><<<blocks_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      rois, total, grad_out, m, batch, channels, p);
}

template void fpn_roi_align_forward_gpu<float>(const float*, int64_t, const float* const*,
                                               const int*, const int*, int, int,
                                               const FPNROIAlignParam&, float*, void*);
template void fpn_roi_align_forward_gpu<double>(const double*, int64_t, const double* const*,
                                                const int*, const int*, int, int,
                                                const FPNROIAlignParam&, double*, void*);
template void fpn_roi_align_backward_gpu<float>(const float*, int64_t, const float*,
                                                float* const*, const int*, const int*, int, int,
                                                const FPNROIAlignParam&, void*);
template void fpn_roi_align_backward_gpu<double>(const double*, int64_t, const double*,
                                                 double* const*, const int*, const int*, int,
                                                 int, const FPNROIAlignParam&, void*);

}  // namespace simpledet
