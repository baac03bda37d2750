// RetinaNet post-processing, CUDA per-(image, level) stage: threshold, top-k and decode on the
// device, with the results of the CPU path (the box math is shared through the headers). For
// every (image, level) segment, in stream order (so one set of scratch buffers serves all):
//   1. a flag kernel marks the scores > score_thresh;
//   2. cub::DeviceSelect::Flagged compacts the flagged candidate numbers o, keeping their order,
//      into the segment's slice of one buffer, and its count on the device;
// then, once the counts are on the host:
//   3. the segment's survivors are stably radix-sorted by descending score (ties stay in o
//      order, as the CPU path's "lower o first");
//   4. a decode kernel writes the first min(count, pre_nms_top_n) as [box, score, class].
// The candidates are copied to the host, where the class-aware NMS runs
// (retina_postprocess.cc).
#include <cuda_runtime.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "retina_postprocess.h"

namespace simpledet {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " +
                             cudaGetErrorString(err));
}

// Larger float, larger key; -0 and +0 map alike (they compare equal on the host).
__device__ inline uint32_t rp_order_key(float f) {
  if (f == 0.f) f = 0.f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void iota_kernel(int n, int* out) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    out[i] = i;
}

__global__ void flag_kernel(const float* scores, int n, float thresh, unsigned char* flags) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    flags[i] = scores[i] > thresh ? 1 : 0;
}

// Ascending keys = descending scores.
__global__ void key_kernel(const float* scores, const int* selected, int n, uint32_t* keys) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += blockDim.x * gridDim.x)
    keys[j] = ~rp_order_key(scores[selected[j]]);
}

__global__ void decode_kernel(RetinaPostParam p, float stride, const float* base,
                              const float* bbox, int height, int width, int num_classes,
                              const float* scores, const int* order, int n,
                              const float* im_info, float* cand) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += blockDim.x * gridDim.x) {
    const int o = order[j];
    float* e = cand + static_cast<int64_t>(j) * kRPCandStride;
    const int cls = rp_decode(p, stride, base, bbox, height, width, num_classes, o, im_info[0],
                              im_info[1], e);
    e[4] = scores[o];
    e[5] = static_cast<float>(cls);
  }
}

int blocks_for(int64_t total) {
  int64_t b = (total + 255) / 256;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

// Sizes derived from the shapes alone, and the carving of the workspace.
struct Plan {
  int batch, levels, segments;
  std::vector<int64_t> level_n;  // scores per image on each level: A * C * H * W
  std::vector<int64_t> sel_off;  // start of each segment's slice of `selected`
  int64_t max_n, total;
  size_t anchors, flags, iota, selected, keys_in, keys_out, vals_out, counts, cand, temp,
      temp_bytes, bytes;
};

Plan make_plan(const RetinaPostParam& p, int batch, int num_classes, const int* heights,
               const int* widths) {
  Plan pl;
  pl.batch = batch;
  pl.levels = p.num_levels;
  pl.segments = batch * p.num_levels;
  pl.max_n = 0;
  for (int l = 0; l < p.num_levels; ++l) {
    const int64_t n = static_cast<int64_t>(p.num_anchors) * num_classes * heights[l] * widths[l];
    pl.level_n.push_back(n);
    pl.max_n = std::max(pl.max_n, n);
  }
  if (pl.max_n >= INT_MAX)
    throw std::runtime_error("a level has A * C * H * W >= 2^31 scores per image; the GPU "
                             "kernels index them with int");
  pl.total = 0;
  for (int s = 0; s < pl.segments; ++s) {
    pl.sel_off.push_back(pl.total);
    pl.total += pl.level_n[s % p.num_levels];
  }
  size_t select_bytes = 0, sort_bytes = 0;
  const int max_n = static_cast<int>(pl.max_n);
  check(cub::DeviceSelect::Flagged(nullptr, select_bytes, static_cast<const int*>(nullptr),
                                   static_cast<const unsigned char*>(nullptr),
                                   static_cast<int*>(nullptr), static_cast<int*>(nullptr), max_n),
        "cub::DeviceSelect::Flagged (size query)");
  check(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes,
                                        static_cast<const uint32_t*>(nullptr),
                                        static_cast<uint32_t*>(nullptr),
                                        static_cast<const int*>(nullptr),
                                        static_cast<int*>(nullptr), max_n),
        "cub::DeviceRadixSort (size query)");
  size_t at = 0;
  auto take = [&at](size_t n) {
    size_t start = at;
    at += (n + 255) / 256 * 256;
    return start;
  };
  const int64_t k = p.pre_nms_top_n;
  pl.anchors = take(sizeof(float) * p.num_levels * p.num_anchors * 4);
  pl.flags = take(pl.max_n);
  pl.iota = take(sizeof(int) * pl.max_n);
  pl.selected = take(sizeof(int) * pl.total);
  pl.keys_in = take(sizeof(uint32_t) * pl.max_n);
  pl.keys_out = take(sizeof(uint32_t) * pl.max_n);
  pl.vals_out = take(sizeof(int) * pl.max_n);
  pl.counts = take(sizeof(int) * pl.segments);
  pl.cand = take(sizeof(float) * pl.segments * k * kRPCandStride);
  pl.temp_bytes = std::max(select_bytes, sort_bytes);
  pl.temp = take(pl.temp_bytes);
  pl.bytes = at;
  return pl;
}

template <typename T>
T* at(void* ws, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(ws) + offset);
}

}  // namespace

size_t retina_postprocess_gpu_workspace(const RetinaPostParam& p, int batch, int num_classes,
                                        const int* heights, const int* widths) {
  return make_plan(p, batch, num_classes, heights, widths).bytes;
}

void retina_postprocess_candidates_gpu(const RetinaPostParam& p, int batch, int num_classes,
                                       const int* heights, const int* widths,
                                       const float* const* cls, const float* const* bbox,
                                       const float* im_info, const float* base_anchors,
                                       float* cands, int* counts, void* workspace,
                                       size_t workspace_bytes, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const Plan pl = make_plan(p, batch, num_classes, heights, widths);
  if (workspace_bytes < pl.bytes) throw std::runtime_error("GPU workspace too small");
  const int levels = p.num_levels, segments = pl.segments;
  const int64_t k = p.pre_nms_top_n;
  float* d_anchors = at<float>(workspace, pl.anchors);
  unsigned char* d_flags = at<unsigned char>(workspace, pl.flags);
  int* d_iota = at<int>(workspace, pl.iota);
  int* d_selected = at<int>(workspace, pl.selected);
  uint32_t* d_keys_in = at<uint32_t>(workspace, pl.keys_in);
  uint32_t* d_keys_out = at<uint32_t>(workspace, pl.keys_out);
  int* d_vals_out = at<int>(workspace, pl.vals_out);
  int* d_counts = at<int>(workspace, pl.counts);
  float* d_cand = at<float>(workspace, pl.cand);
  void* d_temp = at<void>(workspace, pl.temp);

  check(cudaMemcpyAsync(d_anchors, base_anchors, sizeof(float) * levels * p.num_anchors * 4,
                        cudaMemcpyHostToDevice, stream), "copying anchors");
  iota_kernel<<<blocks_for(pl.max_n), 256, 0, stream>>>(static_cast<int>(pl.max_n), d_iota);
  check(cudaGetLastError(), "iota_kernel");
  // 1-2: flag and compact every segment.
  for (int s = 0; s < segments; ++s) {
    const int b = s / levels, l = s % levels;
    const int n = static_cast<int>(pl.level_n[l]);
    const float* scores = cls[l] + static_cast<int64_t>(b) * n;
    flag_kernel<<<blocks_for(n), 256, 0, stream>>>(scores, n, p.score_thresh, d_flags);
    check(cudaGetLastError(), "flag_kernel");
    size_t temp = pl.temp_bytes;
    check(cub::DeviceSelect::Flagged(d_temp, temp, static_cast<const int*>(d_iota),
                                     static_cast<const unsigned char*>(d_flags),
                                     d_selected + pl.sel_off[s], d_counts + s, n, stream),
          "selecting candidates");
  }
  std::vector<int> found(segments, 0);
  check(cudaMemcpyAsync(found.data(), d_counts, sizeof(int) * segments, cudaMemcpyDeviceToHost,
                        stream), "copying counts");
  check(cudaStreamSynchronize(stream), "threshold/select");
  // 3-4: sort each segment's survivors, decode its best k.
  for (int s = 0; s < segments; ++s) {
    const int m = found[s];
    counts[s] = static_cast<int>(std::min<int64_t>(m, k));
    if (m == 0) continue;
    const int b = s / levels, l = s % levels;
    const int64_t plane = static_cast<int64_t>(heights[l]) * widths[l];
    const float* scores = cls[l] + static_cast<int64_t>(b) * pl.level_n[l];
    const float* deltas = bbox[l] + static_cast<int64_t>(b) * 4 * p.num_anchors * plane;
    const int* selected = d_selected + pl.sel_off[s];
    key_kernel<<<blocks_for(m), 256, 0, stream>>>(scores, selected, m, d_keys_in);
    check(cudaGetLastError(), "key_kernel");
    size_t temp = pl.temp_bytes;
    check(cub::DeviceRadixSort::SortPairs(d_temp, temp, static_cast<const uint32_t*>(d_keys_in),
                                          d_keys_out, selected, d_vals_out, m, 0, 32, stream),
          "sorting candidates");
    decode_kernel<<<blocks_for(counts[s]), 256, 0, stream>>>(
        p, p.strides[l], d_anchors + static_cast<int64_t>(l) * p.num_anchors * 4, deltas,
        heights[l], widths[l], num_classes, scores, d_vals_out, counts[s], im_info + 3 * b,
        d_cand + s * k * kRPCandStride);
    check(cudaGetLastError(), "decode_kernel");
  }
  check(cudaMemcpyAsync(cands, d_cand, sizeof(float) * segments * k * kRPCandStride,
                        cudaMemcpyDeviceToHost, stream), "copying candidates");
  check(cudaStreamSynchronize(stream), "sort/decode");
}

}  // namespace simpledet
