// Sigmoid focal loss, CUDA kernels. Same per-element math as the CPU path (focal_loss.h).
// Forward: one thread per (anchor, class) element in a grid-stride loop; each block reduces
// its loss (double) and foreground count into a partial, and one block adds the partials in a
// fixed order, so the loss does not depend on scheduling. Backward: the same count reduction,
// then one thread per element writes scale * dFL/dx with scale = out_grad / max(count, 1).
// Nothing is copied to the host.
#include <cuda_runtime.h>

#include <cstdint>

#include "focal_loss.h"

namespace simpledet {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;  // partials per reduction

// Workspace layout: partial sums (double), partial counts (long long), the backward scale.
struct Workspace {
  double* sums;
  long long* counts;
  double* scale;
};

Workspace carve(void* ws) {
  Workspace w;
  w.sums = static_cast<double*>(ws);
  w.counts = reinterpret_cast<long long*>(w.sums + kMaxBlocks);
  w.scale = reinterpret_cast<double*>(w.counts + kMaxBlocks);
  return w;
}

int blocks_for(int64_t total) {
  int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<int>(b < kMaxBlocks ? (b > 0 ? b : 1) : kMaxBlocks);
}

// Sums `sum` and `count` over the block (blockDim.x == kThreads); thread 0 gets the totals.
__device__ inline void block_reduce(double* sum, long long* count) {
  __shared__ double s_sum[kThreads];
  __shared__ long long s_count[kThreads];
  s_sum[threadIdx.x] = *sum;
  s_count[threadIdx.x] = *count;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      s_sum[threadIdx.x] += s_sum[threadIdx.x + half];
      s_count[threadIdx.x] += s_count[threadIdx.x + half];
    }
    __syncthreads();
  }
  *sum = s_sum[0];
  *count = s_count[0];
}

// Per element (i = anchor * C + c): the loss term; the anchor is counted once (at c == 0).
// Bad labels add NaN.
template <typename T>
__global__ void forward_kernel(const T* logits, const T* labels, int64_t total, int classes,
                               T alpha, T gamma, Workspace w) {
  double sum = 0.0;
  long long count = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t anchor = i / classes;
    const int c = static_cast<int>(i - anchor * classes);
    const int label = focal_label(labels[anchor], classes);
    if (label == kFocalBadLabel) {
      sum += nan("");
      continue;
    }
    if (label < 0) continue;
    if (c == 0 && label > 0) ++count;
    sum += static_cast<double>(focal_loss_value(logits[i], c + 1 == label, alpha, gamma));
  }
  block_reduce(&sum, &count);
  if (threadIdx.x == 0) {
    w.sums[blockIdx.x] = sum;
    w.counts[blockIdx.x] = count;
  }
}

// Foreground anchors per block, for the backward.
template <typename T>
__global__ void count_kernel(const T* labels, int64_t anchors, int classes, Workspace w) {
  double unused = 0.0;
  long long count = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < anchors;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
    count += focal_label(labels[i], classes) > 0;
  block_reduce(&unused, &count);
  if (threadIdx.x == 0) w.counts[blockIdx.x] = count;
}

// One block: adds the `blocks` partials in a fixed order. Forward (loss != nullptr): loss[0] =
// sum / max(count, 1). Backward: *w.scale = out_grad[0] / max(count, 1).
template <typename T>
__global__ void finish_kernel(int blocks, Workspace w, const T* out_grad, T* loss) {
  double sum = 0.0;
  long long count = 0;
  for (int k = threadIdx.x; k < blocks; k += blockDim.x) {
    if (loss != nullptr) sum += w.sums[k];
    count += w.counts[k];
  }
  block_reduce(&sum, &count);
  if (threadIdx.x == 0) {
    const double norm = static_cast<double>(count > 0 ? count : 1);
    if (loss != nullptr) loss[0] = static_cast<T>(sum / norm);
    else *w.scale = static_cast<double>(out_grad[0]) / norm;
  }
}

template <typename T>
__global__ void grad_kernel(const T* logits, const T* labels, int64_t total, int classes,
                            T alpha, T gamma, Workspace w, T* logits_grad) {
  const T scale = static_cast<T>(*w.scale);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t anchor = i / classes;
    const int c = static_cast<int>(i - anchor * classes);
    const int label = focal_label(labels[anchor], classes);
    T g;
    if (label == kFocalBadLabel) g = static_cast<T>(nan(""));
    else if (label < 0) g = T(0);
    else g = scale * focal_loss_grad(logits[i], c + 1 == label, alpha, gamma);
    logits_grad[i] = g;
  }
}

int elementwise_blocks(int64_t total) {
  int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

}  // namespace

size_t focal_loss_gpu_workspace() {
  return kMaxBlocks * (sizeof(double) + sizeof(long long)) + sizeof(double);
}

template <typename T>
void focal_loss_forward_gpu(const T* logits, const T* labels, int64_t anchors, int classes,
                            T alpha, T gamma, T* loss, void* workspace, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const Workspace w = carve(workspace);
  const int64_t total = anchors * classes;
  const int blocks = blocks_for(total);
  forward_kernel<T><<<blocks, kThreads, 0, stream>>>(logits, labels, total, classes, alpha,
                                                     gamma, w);
  finish_kernel<T><<<1, kThreads, 0, stream>>>(blocks, w, nullptr, loss);
}

template <typename T>
void focal_loss_backward_gpu(const T* out_grad, const T* logits, const T* labels,
                             int64_t anchors, int classes, T alpha, T gamma, T* logits_grad,
                             T* labels_grad, void* workspace, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const Workspace w = carve(workspace);
  const int blocks = blocks_for(anchors);
  count_kernel<T><<<blocks, kThreads, 0, stream>>>(labels, anchors, classes, w);
  finish_kernel<T><<<1, kThreads, 0, stream>>>(blocks, w, out_grad, static_cast<T*>(nullptr));
  const int64_t total = anchors * classes;
  grad_kernel<T><<<elementwise_blocks(total), kThreads, 0, stream>>>(
      logits, labels, total, classes, alpha, gamma, w, logits_grad);
  cudaMemsetAsync(labels_grad, 0, sizeof(T) * anchors, stream);
}

template void focal_loss_forward_gpu<float>(const float*, const float*, int64_t, int, float,
                                            float, float*, void*, void*);
template void focal_loss_forward_gpu<double>(const double*, const double*, int64_t, int, double,
                                             double, double*, void*, void*);
template void focal_loss_backward_gpu<float>(const float*, const float*, const float*, int64_t,
                                             int, float, float, float*, float*, void*, void*);
template void focal_loss_backward_gpu<double>(const double*, const double*, const double*,
                                              int64_t, int, double, double, double*, double*,
                                              void*, void*);

}  // namespace simpledet
