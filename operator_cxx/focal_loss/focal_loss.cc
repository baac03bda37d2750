// Sigmoid focal loss, CPU implementation and registration as _contrib_SigmoidFocalLoss.
//
// Inputs: logits (..., C) float32/float64, one logit per foreground class (no background
// logit); labels (...) of the same dtype, the leading shape of logits (RetinaNet: logits
// (B, N, C), labels (B, N)): 0 background, 1..C the class, negative (-1) ignored; read as the
// nearest integer. Output: loss (1,) = sum over non-ignored anchors and all C classes of the
// focal loss (focal_loss.h), divided by max(number of anchors with a label in 1..C, 1).
// Backward: d loss / d logits times the output gradient; labels get a zero gradient.
// Labels above C (or NaN) raise an error here; on the GPU they make the loss NaN.
//
// Sums run in double over fixed chunks of anchors, so the result does not depend on the
// thread count.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "focal_loss.h"
#include "simpledet_op.h"

namespace simpledet {
namespace {

const char* kOpName = "SigmoidFocalLoss";

struct FocalParam {
  double alpha, gamma;
};

FocalParam parse_param(const Attrs& attrs) {
  FocalParam p;
  p.alpha = attr_double(attrs, "alpha", 0.25);
  p.gamma = attr_double(attrs, "gamma", 2.0);
  if (!(p.alpha >= 0.0 && p.alpha <= 1.0))
    throw AttrError("alpha must be in [0, 1], got " + std::to_string(p.alpha));
  if (!(p.gamma >= 0.0 && std::isfinite(p.gamma)))
    throw AttrError("gamma must be a finite number >= 0, got " + std::to_string(p.gamma));
  return p;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  SIMPLEDET_TRY(kOpName, {
    parse_param(attrs);
    *num_in = 2;
    *num_out = 1;
    return MX_SUCCESS;
  })
}

MXReturnValue infer_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  const int t = in->at(0);
  if (t != kFloat32 && t != kFloat64) {
    MX_ERROR_MSG << kOpName << ": logits must be float32 or float64, got " << dtype_name(t)
                 << " (cast fp16/bf16 logits to float32 before the loss)";
    return MX_FAIL;
  }
  if (in->at(1) != t) {
    MX_ERROR_MSG << kOpName << ": labels must have the dtype of logits (" << dtype_name(t)
                 << "), got " << dtype_name(in->at(1));
    return MX_FAIL;
  }
  out->at(0) = t;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs&, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  const auto& logits = in->at(0);
  const auto& labels = in->at(1);
  if (logits.size() < 2 || logits.back() < 1) {
    MX_ERROR_MSG << kOpName << ": logits must be (B, N, C) (or any (..., C)) with C >= 1 "
                 << "foreground classes, got " << shape_str(logits);
    return MX_FAIL;
  }
  if (labels != std::vector<unsigned int>(logits.begin(), logits.end() - 1)) {
    std::vector<unsigned int> want(logits.begin(), logits.end() - 1);
    MX_ERROR_MSG << kOpName << ": labels must be " << shape_str(want) << " (logits "
                 << shape_str(logits) << " without the class axis), got " << shape_str(labels);
    return MX_FAIL;
  }
  out->at(0) = {1u};
  return MX_SUCCESS;
}

constexpr int64_t kChunk = 1024;  // anchors per partial sum

// Throws for the first anchor (in chunk order) whose label is not -1, 0 or 1..C.
template <typename T>
void check_bad_labels(const std::vector<int64_t>& bad, const T* labels, int classes) {
  for (int64_t i : bad) {
    if (i < 0) continue;
    throw std::runtime_error("labels must be -1 (ignored), 0 (background) or a class in 1.." +
                             std::to_string(classes) + " (C = logits.shape[-1]), got " +
                             std::to_string(static_cast<double>(labels[i])) +
                             " at flat anchor index " + std::to_string(i));
  }
}

// Number of anchors with a label in 1..C.
template <typename T>
int64_t count_foreground(const T* labels, int64_t anchors, int classes) {
  const int64_t chunks = (anchors + kChunk - 1) / kChunk;
  std::vector<int64_t> fg(chunks, 0), bad(chunks, -1);
  parallel_for(chunks, [&](int64_t k) {
    const int64_t end = std::min(anchors, (k + 1) * kChunk);
    for (int64_t i = k * kChunk; i < end; ++i) {
      const int label = focal_label(labels[i], classes);
      if (label == kFocalBadLabel) {
        bad[k] = i;
        return;
      }
      fg[k] += label > 0;
    }
  });
  check_bad_labels(bad, labels, classes);
  int64_t total = 0;
  for (int64_t n : fg) total += n;
  return total;
}

template <typename T>
void forward_cpu(const T* logits, const T* labels, int64_t anchors, int classes,
                 const FocalParam& p, T* loss) {
  const int64_t fg = count_foreground(labels, anchors, classes);
  const T alpha = static_cast<T>(p.alpha), gamma = static_cast<T>(p.gamma);
  const int64_t chunks = (anchors + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks, 0.0);
  parallel_for(chunks, [&](int64_t k) {
    const int64_t end = std::min(anchors, (k + 1) * kChunk);
    double sum = 0.0;
    for (int64_t i = k * kChunk; i < end; ++i) {
      const int label = focal_label(labels[i], classes);
      if (label < 0) continue;
      const T* x = logits + i * classes;
      T acc = 0;  // one anchor's C terms in T, then the anchors in double
      for (int c = 0; c < classes; ++c) acc += focal_loss_value(x[c], c + 1 == label, alpha, gamma);
      sum += static_cast<double>(acc);
    }
    partial[k] = sum;
  });
  double total = 0.0;
  for (double s : partial) total += s;
  loss[0] = static_cast<T>(total / static_cast<double>(std::max<int64_t>(fg, 1)));
}

template <typename T>
void backward_cpu(const T* out_grad, const T* logits, const T* labels, int64_t anchors,
                  int classes, const FocalParam& p, T* logits_grad, T* labels_grad) {
  const int64_t fg = count_foreground(labels, anchors, classes);
  const T alpha = static_cast<T>(p.alpha), gamma = static_cast<T>(p.gamma);
  const T scale = static_cast<T>(static_cast<double>(out_grad[0]) /
                                 static_cast<double>(std::max<int64_t>(fg, 1)));
  const int64_t chunks = (anchors + kChunk - 1) / kChunk;
  parallel_for(chunks, [&](int64_t k) {
    const int64_t end = std::min(anchors, (k + 1) * kChunk);
    for (int64_t i = k * kChunk; i < end; ++i) {
      const int label = focal_label(labels[i], classes);
      const T* x = logits + i * classes;
      T* g = logits_grad + i * classes;
      labels_grad[i] = T(0);
      if (label < 0) {
        std::fill_n(g, classes, T(0));
        continue;
      }
      for (int c = 0; c < classes; ++c)
        g[c] = scale * focal_loss_grad(x[c], c + 1 == label, alpha, gamma);
    }
  });
}

int64_t num_classes(const MXTensor& logits) { return logits.shape.back(); }

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource&) {
  SIMPLEDET_TRY(kOpName, {
    const FocalParam p = parse_param(attrs);
    MXTensor& logits = in->at(0);
    const int classes = static_cast<int>(num_classes(logits));
    const int64_t anchors = in->at(1).size();
    if (logits.dtype == kFloat64)
      forward_cpu<double>(logits.data<double>(), in->at(1).data<double>(), anchors, classes, p,
                          out->at(0).data<double>());
    else
      forward_cpu<float>(logits.data<float>(), in->at(1).data<float>(), anchors, classes, p,
                         out->at(0).data<float>());
    return MX_SUCCESS;
  })
}

// Backward inputs: out_grad (1,), logits, labels, loss; outputs: logits_grad, labels_grad.
MXReturnValue backward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                       const OpResource&) {
  SIMPLEDET_TRY(kOpName, {
    const FocalParam p = parse_param(attrs);
    MXTensor& logits = in->at(1);
    const int classes = static_cast<int>(num_classes(logits));
    const int64_t anchors = in->at(2).size();
    if (logits.dtype == kFloat64)
      backward_cpu<double>(in->at(0).data<double>(), logits.data<double>(),
                           in->at(2).data<double>(), anchors, classes, p,
                           out->at(0).data<double>(), out->at(1).data<double>());
    else
      backward_cpu<float>(in->at(0).data<float>(), logits.data<float>(), in->at(2).data<float>(),
                          anchors, classes, p, out->at(0).data<float>(),
                          out->at(1).data<float>());
    return MX_SUCCESS;
  })
}

#ifdef SIMPLEDET_WITH_CUDA
void* gpu_workspace(const OpResource& res) {
  void* ws = res.alloc_gpu(static_cast<int>(focal_loss_gpu_workspace()));
  if (ws == nullptr) throw std::runtime_error("could not allocate the GPU workspace");
  return ws;
}

void check_cuda() {
  std::string err = cuda::last_error();
  if (!err.empty()) throw std::runtime_error("CUDA error: " + err);
}

MXReturnValue forward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                          std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    const FocalParam p = parse_param(attrs);
    MXTensor& logits = in->at(0);
    const int classes = static_cast<int>(num_classes(logits));
    const int64_t anchors = in->at(1).size();
    void* ws = gpu_workspace(res);
    void* stream = res.get_cuda_stream();
    if (logits.dtype == kFloat64)
      focal_loss_forward_gpu<double>(logits.data<double>(), in->at(1).data<double>(), anchors,
                                     classes, p.alpha, p.gamma, out->at(0).data<double>(), ws,
                                     stream);
    else
      focal_loss_forward_gpu<float>(logits.data<float>(), in->at(1).data<float>(), anchors,
                                    classes, static_cast<float>(p.alpha),
                                    static_cast<float>(p.gamma), out->at(0).data<float>(), ws,
                                    stream);
    check_cuda();
    return MX_SUCCESS;
  })
}

MXReturnValue backward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                           std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    const FocalParam p = parse_param(attrs);
    MXTensor& logits = in->at(1);
    const int classes = static_cast<int>(num_classes(logits));
    const int64_t anchors = in->at(2).size();
    void* ws = gpu_workspace(res);
    void* stream = res.get_cuda_stream();
    if (logits.dtype == kFloat64)
      focal_loss_backward_gpu<double>(in->at(0).data<double>(), logits.data<double>(),
                                      in->at(2).data<double>(), anchors, classes, p.alpha,
                                      p.gamma, out->at(0).data<double>(),
                                      out->at(1).data<double>(), ws, stream);
    else
      focal_loss_backward_gpu<float>(in->at(0).data<float>(), logits.data<float>(),
                                     in->at(2).data<float>(), anchors, classes,
                                     static_cast<float>(p.alpha), static_cast<float>(p.gamma),
                                     out->at(0).data<float>(), out->at(1).data<float>(), ws,
                                     stream);
    check_cuda();
    return MX_SUCCESS;
  })
}
#endif

}  // namespace
}  // namespace simpledet

REGISTER_OP(_contrib_SigmoidFocalLoss)
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
