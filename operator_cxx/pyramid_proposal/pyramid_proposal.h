// Pyramid (FPN) RPN proposals: per-level anchor decoding and top-k, then one joint NMS over
// all levels of an image. Shared by the CPU (.cc) and CUDA (.cu) implementations; the box
// arithmetic here is written so host and device round identically (see PP_MUL & co.).
#ifndef SIMPLEDET_PYRAMID_PROPOSAL_H_
#define SIMPLEDET_PYRAMID_PROPOSAL_H_

#include <cmath>
#include <cstdint>

#include "box_utils.h"

namespace simpledet {

constexpr int kPPMaxLevels = 8;

struct PyramidProposalParam {
  int num_levels;
  float strides[kPPMaxLevels];  // ascending
  int num_anchors;              // A = len(ratios) * len(scales)
  int pre_nms_top_n;   // per level and image, > 0
  int post_nms_top_n;  // per image, > 0
  float nms_threshold;
  float min_size;      // in input pixels before im_info[2] scaling
};

// nvcc contracts a * b + c into one fused multiply-add by default, which rounds differently
// from the host (and NumPy). Device code uses the explicitly rounded intrinsics instead, so
// CPU and GPU produce bit-identical boxes.
#ifdef __CUDA_ARCH__
#define PP_MUL(a, b) __fmul_rn((a), (b))
#define PP_ADD(a, b) __fadd_rn((a), (b))
#define PP_SUB(a, b) __fadd_rn((a), -(b))
#else
#define PP_MUL(a, b) ((a) * (b))
#define PP_ADD(a, b) ((a) + (b))
#define PP_SUB(a, b) ((a) - (b))
#endif

// exp rounded to float through double: correctly rounded in practice on host, device and in
// NumPy (np.exp(x.astype(float64)).astype(float32)); float32 exp implementations differ by an
// ulp between glibc, CUDA and NumPy's SIMD code.
SD_HD inline float pp_exp(float x) { return static_cast<float>(exp(static_cast<double>(x))); }

// Same arithmetic as box_decode (box_utils.h), with the rounding made explicit.
SD_HD inline void pp_decode(const float* in, float dx, float dy, float dw, float dh,
                            float* out) {
  float w = PP_ADD(PP_SUB(in[2], in[0]), 1.f), h = PP_ADD(PP_SUB(in[3], in[1]), 1.f);
  float cx = PP_ADD(in[0], PP_MUL(0.5f, PP_SUB(w, 1.f)));
  float cy = PP_ADD(in[1], PP_MUL(0.5f, PP_SUB(h, 1.f)));
  dw = fminf(dw, kBoxDeltaClip);
  dh = fminf(dh, kBoxDeltaClip);
  float pcx = PP_ADD(PP_MUL(dx, w), cx), pcy = PP_ADD(PP_MUL(dy, h), cy);
  float pw = PP_MUL(pp_exp(dw), w), ph = PP_MUL(pp_exp(dh), h);
  float hw = PP_MUL(0.5f, PP_SUB(pw, 1.f)), hh = PP_MUL(0.5f, PP_SUB(ph, 1.f));
  out[0] = PP_SUB(pcx, hw);
  out[1] = PP_SUB(pcy, hh);
  out[2] = PP_ADD(pcx, hw);
  out[3] = PP_ADD(pcy, hh);
}

SD_HD inline float pp_area(const float* b) {
  return PP_MUL(PP_ADD(PP_SUB(b[2], b[0]), 1.f), PP_ADD(PP_SUB(b[3], b[1]), 1.f));
}

// Same arithmetic as box_iou (box_utils.h), with the rounding made explicit.
SD_HD inline float pp_iou(const float* a, const float* b) {
  float w = PP_ADD(PP_SUB(fminf(a[2], b[2]), fmaxf(a[0], b[0])), 1.f);
  float h = PP_ADD(PP_SUB(fminf(a[3], b[3]), fmaxf(a[1], b[1])), 1.f);
  if (w <= 0.f || h <= 0.f) return 0.f;
  float inter = PP_MUL(w, h);
  return inter / PP_SUB(PP_ADD(pp_area(a), pp_area(b)), inter);
}

// Decodes anchor `a` at feature location (y, x) of a level, clips it to the image and tests
// the size filter. Returns whether the box survives (NaN scores never survive).
// base_all: the level's (A, 4) base anchors (location (0, 0)); cls: the image's (A, H, W) plane
// stack; bbox: its (4A, H, W) stack.
SD_HD inline bool pp_make_box(float stride, const float* base_all, const float* cls,
                              const float* bbox, int height, int width, int y, int x, int a,
                              float im_h, float im_w, float min_px, float* box, float* score) {
  const int64_t plane = static_cast<int64_t>(height) * width;
  const int64_t pix = static_cast<int64_t>(y) * width + x;
  const float* base = base_all + static_cast<int64_t>(a) * 4;
  float sx = static_cast<float>(x) * stride;
  float sy = static_cast<float>(y) * stride;
  float anchor[4] = {PP_ADD(base[0], sx), PP_ADD(base[1], sy), PP_ADD(base[2], sx),
                     PP_ADD(base[3], sy)};
  const float* d = bbox + static_cast<int64_t>(a) * 4 * plane + pix;
  pp_decode(anchor, d[0], d[plane], d[2 * plane], d[3 * plane], box);
  box_clip(box, im_h, im_w);
  *score = cls[static_cast<int64_t>(a) * plane + pix];
  float bw = PP_ADD(PP_SUB(box[2], box[0]), 1.f), bh = PP_ADD(PP_SUB(box[3], box[1]), 1.f);
  return !(bw < min_px) && !(bh < min_px) && *score == *score;
}

// Launchers of the CUDA implementation (pyramid_proposal.cu). Device pointers: cls[l] is
// (B, A, H_l, W_l), bbox[l] (B, 4A, H_l, W_l), im_info (B, 3), rois (B * post, 5), scores
// (B * post, 1). base_anchors is a host (L, A, 4) array. The workspace (device memory) must
// hold pyramid_proposal_gpu_workspace() bytes.
size_t pyramid_proposal_gpu_workspace(const PyramidProposalParam& p, int batch,
                                      const int* heights, const int* widths);
void pyramid_proposal_forward_gpu(const PyramidProposalParam& p, int batch, const int* heights,
                                  const int* widths, const float* const* cls,
                                  const float* const* bbox, const float* im_info,
                                  const float* base_anchors, float* rois,
                                  float* scores, void* workspace, size_t workspace_bytes,
                                  void* stream);

}  // namespace simpledet

#endif  // SIMPLEDET_PYRAMID_PROPOSAL_H_
