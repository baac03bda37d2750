// Sigmoid focal loss (Lin et al., RetinaNet), per-element math shared by the CPU (.cc) and
// CUDA (.cu) implementations.
//
// For a logit x with p = sigmoid(x), q = 1 - p = sigmoid(-x):
//   target 1 (the anchor's class):  FL = -alpha       * q^gamma * log(p)
//   target 0 (any other class):     FL = -(1 - alpha) * p^gamma * log(q)
//   dFL/dx, target 1:  alpha       * q^gamma * (gamma * p * log(p) - q)
//   dFL/dx, target 0:  (1 - alpha) * p^gamma * (p - gamma * q * log(q))
// log(p) and log(q) come from softplus forms (one exp and one log1p of -|x|), so they stay
// finite for any finite logit; p^gamma is exp(gamma * log(p)) (exactly p * p for gamma = 2).
#ifndef SIMPLEDET_FOCAL_LOSS_H_
#define SIMPLEDET_FOCAL_LOSS_H_

#include <math.h>

#include <cstdint>

#include "box_utils.h"  // SD_HD

namespace simpledet {

SD_HD inline float fl_exp(float x) { return expf(x); }
SD_HD inline double fl_exp(double x) { return exp(x); }
SD_HD inline float fl_log1p(float x) { return log1pf(x); }
SD_HD inline double fl_log1p(double x) { return log1p(x); }

// Label code of one anchor: -1 ignored (any label below -0.5), 0 background, 1..C its class
// (the nearest integer), kFocalBadLabel for labels above C + 0.5 or NaN.
constexpr int kFocalBadLabel = -2;

template <typename T>
SD_HD inline int focal_label(T v, int num_classes) {
  if (v < T(-0.5)) return -1;
  if (v < T(0.5)) return 0;
  if (v < static_cast<T>(num_classes) + T(0.5)) return static_cast<int>(v + T(0.5));
  return kFocalBadLabel;
}

// b^gamma given b and log(b).
template <typename T>
SD_HD inline T fl_pow(T b, T log_b, T gamma) {
  if (gamma == T(2)) return b * b;
  if (gamma == T(0)) return T(1);
  if (gamma == T(1)) return b;
  return fl_exp(gamma * log_b);
}

template <typename T>
struct FocalSigmoid {
  T p, q, log_p, log_q;
};

template <typename T>
SD_HD inline FocalSigmoid<T> focal_sigmoid(T x) {
  FocalSigmoid<T> s;
  const T e = fl_exp(x < T(0) ? x : -x);  // exp(-|x|), in (0, 1]
  const T l = fl_log1p(e);                // softplus(-|x|)
  const T inv = T(1) / (T(1) + e);
  if (x >= T(0)) {
    s.p = inv;
    s.q = e * inv;
    s.log_p = -l;
    s.log_q = -x - l;
  } else {  // also NaN, which then propagates
    s.p = e * inv;
    s.q = inv;
    s.log_p = x - l;
    s.log_q = -l;
  }
  return s;
}

// Focal loss of one logit; `positive`: this logit's class is the anchor's class.
template <typename T>
SD_HD inline T focal_loss_value(T x, bool positive, T alpha, T gamma) {
  const FocalSigmoid<T> s = focal_sigmoid(x);
  if (positive) return -alpha * fl_pow(s.q, s.log_q, gamma) * s.log_p;
  return -(T(1) - alpha) * fl_pow(s.p, s.log_p, gamma) * s.log_q;
}

// d(focal loss)/dx of one logit.
template <typename T>
SD_HD inline T focal_loss_grad(T x, bool positive, T alpha, T gamma) {
  const FocalSigmoid<T> s = focal_sigmoid(x);
  if (positive) return alpha * fl_pow(s.q, s.log_q, gamma) * (gamma * s.p * s.log_p - s.q);
  return (T(1) - alpha) * fl_pow(s.p, s.log_p, gamma) * (s.p - gamma * s.q * s.log_q);
}

// Launchers of the CUDA implementation (focal_loss.cu); device pointers. logits is
// (anchors, C), labels (anchors,). The workspace must hold focal_loss_gpu_workspace() bytes.
// Labels outside {-1, 0, 1..C} cannot raise an error on the device without a stall: they make
// the loss, and the gradient of their anchor's logits, NaN.
size_t focal_loss_gpu_workspace();
template <typename T>
void focal_loss_forward_gpu(const T* logits, const T* labels, int64_t anchors, int classes,
                            T alpha, T gamma, T* loss, void* workspace, void* stream);
template <typename T>
void focal_loss_backward_gpu(const T* out_grad, const T* logits, const T* labels,
                             int64_t anchors, int classes, T alpha, T gamma, T* logits_grad,
                             T* labels_grad, void* workspace, void* stream);

}  // namespace simpledet

#endif  // SIMPLEDET_FOCAL_LOSS_H_
