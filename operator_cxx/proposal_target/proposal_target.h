// Proposal target sampling (Faster R-CNN's box-head sampler), shared by the CPU (.cc) and CUDA
// (.cu) implementations. The per-candidate overlap search is __host__ __device__ so the CUDA
// kernel and the CPU loop compute bit-identical max overlaps; sampling and target encoding run
// on the host in both cases (proposal_target.cc).
#ifndef SIMPLEDET_PROPOSAL_TARGET_H_
#define SIMPLEDET_PROPOSAL_TARGET_H_

#include <cstdint>

#include "box_utils.h"

namespace simpledet {

struct ProposalTargetParam {
  int num_classes;      // including background (class 0)
  int image_rois;       // sampled rois per image
  double fg_fraction;   // fg quota = round_half_even(fg_fraction * image_rois)
  float fg_thresh;      // fg: max_iou >= fg_thresh
  float bg_thresh_hi;   // bg: bg_thresh_lo <= max_iou < bg_thresh_hi (and not fg)
  float bg_thresh_lo;
  float means[4];       // target normalization: (t - means) / stds
  float stds[4];
  bool class_agnostic;  // targets (N, 4) instead of (N, 4 * num_classes)
  bool add_gt;          // the image's gt rows are candidates after its rois (else rois only)
  bool sample;          // subsample image_rois rows; false: every candidate is a row, in order
  bool output_gt_index; // 5th output: the matched gt row of each fg row, -1 elsewhere
  bool has_crowd;       // 3rd input crowd_boxes (B, M, 4): ignore regions for background
  float crowd_thresh;   // with has_crowd: a would-be bg candidate with IoF > it is ignored
};

// Box of candidate k of an image: its R rois (stride 5, box at +1) come first, then, with
// add_gt, its gt rows (stride 5, box at +0) in row order. Padding gt rows (class <= 0) are no
// one's match; the sampler skips them as candidates, the unsampled mode gives them ignored rows.
SD_HD inline const float* candidate_box(const float* rois, int64_t num_rois, const float* gts,
                                        int64_t k) {
  return k < num_rois ? rois + k * 5 + 1 : gts + (k - num_rois) * 5;
}

// Max IoU of `box` with the valid gt rows (class > 0) of `gts` (num_gt rows of 5), and the row
// reaching it (the first one on ties). *argmax = -1 (and *max_iou = 0) when no row is valid.
SD_HD inline void candidate_overlap(const float* box, const float* gts, int num_gt,
                                    float* max_iou, int* argmax) {
  float best = 0.f;
  int arg = -1;
  for (int j = 0; j < num_gt; ++j) {
    const float* g = gts + j * 5;
    if (!(g[4] > 0.f)) continue;
    float iou = box_iou(box, g);
    if (arg < 0 || iou > best) {
      best = iou;
      arg = j;
    }
  }
  *max_iou = best;
  *argmax = arg;
}

// A crowd row [x1, y1, x2, y2] is a region when x1 <= x2, y1 <= y2 and it reaches into the
// image (x2 >= 0, y2 >= 0; input pixels, "+1" convention); any other row (the loader's rows of
// -1, NaN) is padding.
SD_HD inline bool crowd_row_valid(const float* c) {
  return c[2] >= c[0] && c[3] >= c[1] && c[2] >= 0.f && c[3] >= 0.f;
}

// Whether some valid row of `crowds` (num_crowd rows of 4) covers more than `thresh` of `box`'s
// own area (box_iof_above).
SD_HD inline bool in_crowd_region(const float* box, const float* crowds, int num_crowd,
                                  float thresh) {
  for (int m = 0; m < num_crowd; ++m) {
    const float* c = crowds + m * 4;
    if (crowd_row_valid(c) && box_iof_above(box, c, thresh)) return true;
  }
  return false;
}

// CUDA launcher (proposal_target.cu): for every image b and candidate k < R + G, writes
// max_iou[b * (R + G) + k] and argmax[...] as candidate_overlap does (rows of padding gt
// candidates are computed too, and every gt row even without add_gt; the host reads what it
// needs). All pointers are device pointers.
void proposal_target_overlaps_gpu(const float* rois, const float* gt_boxes, int batch,
                                  int64_t rois_per_image, int num_gt, float* max_iou,
                                  int* argmax, void* stream);

}  // namespace simpledet

#endif  // SIMPLEDET_PROPOSAL_TARGET_H_
