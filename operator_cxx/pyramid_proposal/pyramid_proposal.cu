// Pyramid RPN proposals, CUDA implementation. Same results as the CPU path (the box math is
// shared through pyramid_proposal.h):
//   1. decode kernel: every anchor of every (image, level) is decoded, clipped and filtered;
//      its sort key is (segment = image * L + level) << 32 | ~order(score), invalid boxes
//      getting the largest key of their segment;
//   2. one stable cub radix sort of all anchors: segments stay apart, scores descend, ties
//      keep the lower anchor index, invalid boxes come last;
//   3. the valid counts come to the host; a gather kernel takes each segment's first
//      min(count, pre_nms_top_n) boxes into per-image candidate lists (level 0 first);
//   4. a second stable radix sort orders each image's candidates by score;
//   5. a bitmask NMS kernel computes, per image, which later candidate each one suppresses;
//      the greedy pass over the masks, the padding and the output rows are done on the host.
#include <cuda_runtime.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "pyramid_proposal.h"

namespace simpledet {
namespace {

constexpr int kNmsBlock = 64;  // boxes per NMS tile = bits of one mask word

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " +
                             cudaGetErrorString(err));
}

struct Levels {
  const float* cls[kPPMaxLevels];
  const float* bbox[kPPMaxLevels];
  const float* anchors[kPPMaxLevels];  // device (A, 4) base anchors of each level
  int h[kPPMaxLevels], w[kPPMaxLevels];
  float stride[kPPMaxLevels];
  int64_t off[kPPMaxLevels + 1];  // start of each level inside an image's anchors; off[L] = S
  int num_levels, num_anchors;
};

// Monotone map of a float to uint32 (larger float, larger key); -0 and +0 map alike, as they
// compare equal on the host.
__device__ inline uint32_t order_key(float f) {
  if (f == 0.f) f = 0.f;
  uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ inline int level_of(const Levels& lv, int64_t r) {
  int l = 0;
  while (l + 1 < lv.num_levels && r >= lv.off[l + 1]) ++l;
  return l;
}

__global__ void decode_kernel(int64_t total, Levels lv, const float* im_info, float min_size,
                              float* boxes, float* scores, uint64_t* keys, int* vals,
                              int* counts) {
  const int64_t per_image = lv.off[lv.num_levels];
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int b = static_cast<int>(t / per_image);
    int64_t r = t % per_image;
    int l = level_of(lv, r);
    int64_t i = r - lv.off[l];
    int a_num = lv.num_anchors, h = lv.h[l], w = lv.w[l];
    int a = static_cast<int>(i % a_num);
    int x = static_cast<int>((i / a_num) % w);
    int y = static_cast<int>(i / (static_cast<int64_t>(a_num) * w));
    int64_t plane = static_cast<int64_t>(h) * w;
    const float* info = im_info + 3 * b;
    float score;
    bool valid = pp_make_box(lv.stride[l], lv.anchors[l], lv.cls[l] + b * a_num * plane,
                             lv.bbox[l] + b * 4 * a_num * plane, h, w, y, x, a, info[0],
                             info[1], __fmul_rn(min_size, info[2]), boxes + t * 4, &score);
    uint64_t seg = static_cast<uint64_t>(b) * lv.num_levels + l;
    uint32_t low = valid ? ~order_key(score) : 0xFFFFFFFFu;
    scores[t] = score;
    keys[t] = (seg << 32) | low;
    vals[t] = static_cast<int>(t);
    if (valid) atomicAdd(counts + seg, 1);
  }
}

// Candidate c of segment s (found in cand_off, s = image * L + level) is the (c - cand_off[s])-th
// best box of its segment; its key orders the image's candidates by score.
__global__ void gather_kernel(int total, const int* cand_off, int num_segments, Levels lv,
                              const int* sorted_vals, const float* boxes, const float* scores,
                              float* cand_boxes, float* cand_scores, uint64_t* keys,
                              int* vals) {
  const int64_t per_image = lv.off[lv.num_levels];
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < total; c += blockDim.x * gridDim.x) {
    int lo = 0, hi = num_segments;  // last s with cand_off[s] <= c
    while (hi - lo > 1) {
      int mid = (lo + hi) / 2;
      if (cand_off[mid] <= c) lo = mid; else hi = mid;
    }
    int b = lo / lv.num_levels, l = lo % lv.num_levels;
    int g = sorted_vals[b * per_image + lv.off[l] + (c - cand_off[lo])];
    for (int k = 0; k < 4; ++k) cand_boxes[c * 4 + k] = boxes[static_cast<int64_t>(g) * 4 + k];
    float s = scores[g];
    cand_scores[c] = s;
    keys[c] = (static_cast<uint64_t>(b) << 32) | ~order_key(s);
    vals[c] = c;
  }
}

__global__ void permute_kernel(int total, const int* order, const float* cand_boxes,
                               const float* cand_scores, float* boxes, float* scores) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < total; c += blockDim.x * gridDim.x) {
    int src = order[c];
    for (int k = 0; k < 4; ++k) boxes[c * 4 + k] = cand_boxes[src * 4 + k];
    scores[c] = cand_scores[src];
  }
}

// Block (col, row, image): bit k of mask[(img_off[b] + i) * words + col] is set when box i of
// the row tile suppresses box col * 64 + k (a later box, IoU > threshold).
__global__ void nms_mask_kernel(const float* boxes, const int* img_off, int words,
                                float threshold, uint64_t* mask) {
  const int b = blockIdx.z, row = blockIdx.y, col = blockIdx.x;
  const int start = img_off[b], n = img_off[b + 1] - start;
  if (col < row || row * kNmsBlock >= n || col * kNmsBlock >= n) return;
  const int row_size = min(n - row * kNmsBlock, kNmsBlock);
  const int col_size = min(n - col * kNmsBlock, kNmsBlock);
  __shared__ float tile[kNmsBlock * 4];
  if (threadIdx.x < col_size) {
    for (int k = 0; k < 4; ++k)
      tile[threadIdx.x * 4 + k] = boxes[(start + col * kNmsBlock + threadIdx.x) * 4 + k];
  }
  __syncthreads();
  if (threadIdx.x < row_size) {
    const int i = row * kNmsBlock + threadIdx.x;
    const float* box = boxes + (start + i) * 4;
    uint64_t bits = 0;
    for (int k = (row == col) ? threadIdx.x + 1 : 0; k < col_size; ++k) {
      if (pp_iou(box, tile + k * 4) > threshold) bits |= 1ull << k;
    }
    mask[static_cast<int64_t>(start + i) * words + col] = bits;
  }
}

int blocks_for(int64_t total) {
  int64_t b = (total + 255) / 256;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

int key_bits(int64_t segments) {
  int bits = 1;
  while ((int64_t{1} << bits) < segments) ++bits;
  return 32 + bits;
}

size_t radix_temp_bytes(int64_t items, int end_bit) {
  size_t bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint64_t*>(nullptr),
                                        static_cast<uint64_t*>(nullptr),
                                        static_cast<const int*>(nullptr),
                                        static_cast<int*>(nullptr), static_cast<int>(items), 0,
                                        end_bit),
        "cub::DeviceRadixSort (size query)");
  return bytes;
}

// Sizes derived from the shapes alone, and the carving of the workspace.
struct Plan {
  int batch, levels;
  int64_t per_image, total;  // anchors per image, in all
  int64_t max_cands;         // per image: sum over levels of min(H*W*A, pre_nms_top_n)
  int64_t words;             // mask words per candidate row (upper bound)
  size_t bytes;
  size_t anchors, boxes, scores, keys_in, keys_out, vals_in, vals_out, counts, cand_off,
      img_off, cand_boxes, cand_scores, sorted_boxes, sorted_scores, mask, temp, temp_bytes;
};

Plan make_plan(const PyramidProposalParam& p, int batch, const int* heights, const int* widths) {
  Plan pl;
  pl.batch = batch;
  pl.levels = p.num_levels;
  pl.per_image = 0;
  pl.max_cands = 0;
  for (int l = 0; l < p.num_levels; ++l) {
    int64_t n = static_cast<int64_t>(heights[l]) * widths[l] * p.num_anchors;
    pl.per_image += n;
    pl.max_cands += std::min<int64_t>(n, p.pre_nms_top_n);
  }
  pl.total = pl.per_image * batch;
  if (pl.total >= INT32_MAX)
    throw std::runtime_error("too many anchors for the GPU kernels (B * sum H*W*A >= 2^31)");
  pl.words = (pl.max_cands + kNmsBlock - 1) / kNmsBlock;
  const int64_t cands = pl.max_cands * batch;
  size_t at = 0;
  auto take = [&at](size_t n) {
    size_t start = at;
    at += (n + 255) / 256 * 256;
    return start;
  };
  pl.anchors = take(sizeof(float) * p.num_levels * p.num_anchors * 4);
  pl.boxes = take(sizeof(float) * pl.total * 4);
  pl.scores = take(sizeof(float) * pl.total);
  pl.keys_in = take(sizeof(uint64_t) * pl.total);
  pl.keys_out = take(sizeof(uint64_t) * pl.total);
  pl.vals_in = take(sizeof(int) * pl.total);
  pl.vals_out = take(sizeof(int) * pl.total);
  pl.counts = take(sizeof(int) * batch * p.num_levels);
  pl.cand_off = take(sizeof(int) * (batch * p.num_levels + 1));
  pl.img_off = take(sizeof(int) * (batch + 1));
  pl.cand_boxes = take(sizeof(float) * cands * 4);
  pl.cand_scores = take(sizeof(float) * cands);
  pl.sorted_boxes = take(sizeof(float) * cands * 4);
  pl.sorted_scores = take(sizeof(float) * cands);
  pl.mask = take(sizeof(uint64_t) * cands * pl.words);
  pl.temp_bytes = std::max(radix_temp_bytes(pl.total, key_bits(int64_t{batch} * p.num_levels)),
                           radix_temp_bytes(cands, key_bits(batch)));
  pl.temp = take(pl.temp_bytes);
  pl.bytes = at;
  return pl;
}

template <typename T>
T* at(void* ws, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(ws) + offset);
}

}  // namespace

size_t pyramid_proposal_gpu_workspace(const PyramidProposalParam& p, int batch,
                                      const int* heights, const int* widths) {
  return make_plan(p, batch, heights, widths).bytes;
}

void pyramid_proposal_forward_gpu(const PyramidProposalParam& p, int batch, const int* heights,
                                  const int* widths, const float* const* cls,
                                  const float* const* bbox, const float* im_info,
                                  const float* base_anchors, float* rois, float* scores,
                                  void* workspace, size_t workspace_bytes, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const Plan pl = make_plan(p, batch, heights, widths);
  if (workspace_bytes < pl.bytes) throw std::runtime_error("GPU workspace too small");
  const int levels = p.num_levels, segments = batch * levels;
  const int64_t post = p.post_nms_top_n;
  std::vector<float> host_rois(batch * post * 5), host_scores(batch * post);

  float* d_anchors = at<float>(workspace, pl.anchors);
  float* d_boxes = at<float>(workspace, pl.boxes);
  float* d_scores = at<float>(workspace, pl.scores);
  uint64_t* d_keys_in = at<uint64_t>(workspace, pl.keys_in);
  uint64_t* d_keys_out = at<uint64_t>(workspace, pl.keys_out);
  int* d_vals_in = at<int>(workspace, pl.vals_in);
  int* d_vals_out = at<int>(workspace, pl.vals_out);
  int* d_counts = at<int>(workspace, pl.counts);
  int* d_cand_off = at<int>(workspace, pl.cand_off);
  int* d_img_off = at<int>(workspace, pl.img_off);
  float* d_cand_boxes = at<float>(workspace, pl.cand_boxes);
  float* d_cand_scores = at<float>(workspace, pl.cand_scores);
  float* d_sorted_boxes = at<float>(workspace, pl.sorted_boxes);
  float* d_sorted_scores = at<float>(workspace, pl.sorted_scores);
  uint64_t* d_mask = at<uint64_t>(workspace, pl.mask);
  void* d_temp = at<void>(workspace, pl.temp);

  Levels lv;
  lv.num_levels = levels;
  lv.num_anchors = p.num_anchors;
  lv.off[0] = 0;
  for (int l = 0; l < levels; ++l) {
    lv.cls[l] = cls[l];
    lv.bbox[l] = bbox[l];
    lv.anchors[l] = d_anchors + static_cast<int64_t>(l) * p.num_anchors * 4;
    lv.h[l] = heights[l];
    lv.w[l] = widths[l];
    lv.stride[l] = p.strides[l];
    lv.off[l + 1] = lv.off[l] + static_cast<int64_t>(heights[l]) * widths[l] * p.num_anchors;
  }

  // 1-2: decode all anchors, sort each (image, level) segment by score.
  std::vector<int> counts(segments, 0);
  if (pl.total > 0) {
    check(cudaMemcpyAsync(d_anchors, base_anchors, sizeof(float) * levels * p.num_anchors * 4,
                          cudaMemcpyHostToDevice, stream), "copying anchors");
    check(cudaMemsetAsync(d_counts, 0, sizeof(int) * segments, stream), "zeroing counts");
    decode_kernel<<<blocks_for(pl.total), 256, 0, stream>>>(pl.total, lv, im_info, p.min_size,
                                                            d_boxes, d_scores, d_keys_in,
                                                            d_vals_in, d_counts);
    check(cudaGetLastError(), "decode_kernel");
    size_t temp = pl.temp_bytes;
    check(cub::DeviceRadixSort::SortPairs(d_temp, temp, d_keys_in, d_keys_out, d_vals_in,
                                          d_vals_out, static_cast<int>(pl.total), 0,
                                          key_bits(segments), stream),
          "sorting anchors");
    check(cudaMemcpyAsync(counts.data(), d_counts, sizeof(int) * segments,
                          cudaMemcpyDeviceToHost, stream), "copying counts");
    check(cudaStreamSynchronize(stream), "decode/sort");
  }

  // 3: per-image candidate lists.
  std::vector<int> cand_off(segments + 1, 0), img_off(batch + 1, 0);
  for (int s = 0; s < segments; ++s)
    cand_off[s + 1] = cand_off[s] + std::min(counts[s], p.pre_nms_top_n);
  for (int b = 0; b <= batch; ++b) img_off[b] = cand_off[b * levels];
  const int cands = cand_off[segments];
  int max_n = 0;
  for (int b = 0; b < batch; ++b) max_n = std::max(max_n, img_off[b + 1] - img_off[b]);
  const int words = (max_n + kNmsBlock - 1) / kNmsBlock;

  std::vector<float> boxes(static_cast<size_t>(cands) * 4), box_scores(cands);
  std::vector<uint64_t> mask(static_cast<size_t>(cands) * words);
  if (cands > 0) {
    if (words > 65535) throw std::runtime_error("too many NMS candidates per image");
    check(cudaMemcpyAsync(d_cand_off, cand_off.data(), sizeof(int) * (segments + 1),
                          cudaMemcpyHostToDevice, stream), "copying offsets");
    gather_kernel<<<blocks_for(cands), 256, 0, stream>>>(
        cands, d_cand_off, segments, lv, d_vals_out, d_boxes, d_scores, d_cand_boxes,
        d_cand_scores, d_keys_in, d_vals_in);
    check(cudaGetLastError(), "gather_kernel");
    // 4: stable sort of each image's candidates by score.
    size_t temp = pl.temp_bytes;
    check(cub::DeviceRadixSort::SortPairs(d_temp, temp, d_keys_in, d_keys_out, d_vals_in,
                                          d_vals_out, cands, 0, key_bits(batch), stream),
          "sorting candidates");
    permute_kernel<<<blocks_for(cands), 256, 0, stream>>>(cands, d_vals_out, d_cand_boxes,
                                                          d_cand_scores, d_sorted_boxes,
                                                          d_sorted_scores);
    check(cudaGetLastError(), "permute_kernel");
    // 5: suppression masks.
    check(cudaMemcpyAsync(d_img_off, img_off.data(), sizeof(int) * (batch + 1),
                          cudaMemcpyHostToDevice, stream), "copying image offsets");
    dim3 grid(words, words, batch);
    nms_mask_kernel<<<grid, kNmsBlock, 0, stream>>>(d_sorted_boxes, d_img_off, words,
                                                    p.nms_threshold, d_mask);
    check(cudaGetLastError(), "nms_mask_kernel");
    check(cudaMemcpyAsync(boxes.data(), d_sorted_boxes, sizeof(float) * cands * 4,
                          cudaMemcpyDeviceToHost, stream), "copying boxes");
    check(cudaMemcpyAsync(box_scores.data(), d_sorted_scores, sizeof(float) * cands,
                          cudaMemcpyDeviceToHost, stream), "copying scores");
    check(cudaMemcpyAsync(mask.data(), d_mask, sizeof(uint64_t) * cands * words,
                          cudaMemcpyDeviceToHost, stream), "copying masks");
    check(cudaStreamSynchronize(stream), "NMS");
  }

  // Greedy pass and output rows, per image.
  std::vector<uint64_t> removed(words);
  std::vector<int> keep;
  for (int b = 0; b < batch; ++b) {
    const int start = img_off[b], n = img_off[b + 1] - start;
    const int used_words = (n + kNmsBlock - 1) / kNmsBlock;
    std::fill(removed.begin(), removed.end(), 0);
    keep.clear();
    for (int i = 0; i < n; ++i) {
      if ((removed[i / kNmsBlock] >> (i % kNmsBlock)) & 1) continue;
      keep.push_back(start + i);
      if (static_cast<int64_t>(keep.size()) == post) break;
      const uint64_t* row = mask.data() + static_cast<size_t>(start + i) * words;
      for (int j = i / kNmsBlock; j < used_words; ++j) removed[j] |= row[j];
    }
    for (int64_t j = 0; j < post; ++j) {
      float* out = host_rois.data() + (b * post + j) * 5;
      out[0] = static_cast<float>(b);
      if (keep.empty()) {
        std::fill_n(out + 1, 4, 0.f);
        host_scores[b * post + j] = 0.f;
      } else {
        int c = keep[j % keep.size()];
        std::copy_n(boxes.data() + static_cast<size_t>(c) * 4, 4, out + 1);
        host_scores[b * post + j] = box_scores[c];
      }
    }
  }
  check(cudaMemcpyAsync(rois, host_rois.data(), sizeof(float) * host_rois.size(),
                        cudaMemcpyHostToDevice, stream), "copying rois");
  check(cudaMemcpyAsync(scores, host_scores.data(), sizeof(float) * host_scores.size(),
                        cudaMemcpyHostToDevice, stream), "copying scores");
  check(cudaStreamSynchronize(stream), "output copy");
}

}  // namespace simpledet
