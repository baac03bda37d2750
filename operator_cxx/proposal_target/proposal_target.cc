// Proposal target sampling (Faster R-CNN box-head targets), CPU implementation, host sampling
// shared with the GPU path, and registration as _contrib_ProposalTarget.
//
// Inputs: rois (B*R, 5) [batch_idx, x1, y1, x2, y2] as B contiguous blocks of R rows (column 0
// is not read: block b belongs to image b); gt_boxes (B, G, 5) [x1, y1, x2, y2, class], rows
// with class <= 0 are padding. Outputs, S rows per image, image b's rows at [b*S, (b+1)*S):
// rois (B*S, 5) with batch_idx = b; labels (B*S,); bbox_targets and bbox_weights
// (B*S, 4*num_classes), or (B*S, 4) when class_agnostic; with output_gt_index a 5th output
// gt_index (B*S,): for a fg row the row j (0..G-1) of gt_boxes[b] it is matched to, -1 on every
// other row. All float32. S = image_rois when sample (the default), else R + G with add_gt
// (the default) or R without. With has_crowd a 3rd input crowd_boxes (B, M, 4) [x1, y1, x2, y2]:
// image b's crowd (iscrowd) regions in input pixels; rows that are no box reaching into the
// image (x2 < x1, y2 < y1, x2 < 0 or y2 < 0: the loader's rows of -1) are padding.
//
// Per image, the candidates are its R rois followed, with add_gt, by its G gt rows (row order).
// Each gets its max IoU with the valid gts (+1 convention) and the gt reaching it (first on
// ties). fg: max_iou >= fg_thresh; bg: not fg and bg_thresh_lo <= max_iou < bg_thresh_hi; with
// no valid gt every candidate is bg; any other candidate is ignored. With has_crowd a candidate
// that would be bg is ignored instead when some valid crowd row of its image covers more than
// crowd_thresh of its own area (IoF > crowd_thresh, "+1" areas; Detectron's crowd_thresh 0.7);
// fg candidates stay fg; without has_crowd (the default) nothing changes.
//
// sample: padding gt rows are no candidates. num_fg = min(round_half_even(fg_fraction * S), #fg)
// sampled without replacement; the other S - num_fg rows are bg, without replacement when there
// are enough, else every bg plus uniform repeats; with no bg at all they are label -1 rows
// holding the image's first candidate with zero weights. Rows: fg block (ascending candidate
// index), bg block (ascending), fill rows.
// Without sample (cascade stages relabelling a previous stage's boxes): row k is candidate k,
// labelled by the rules above: fg rows get their gt's class and targets, bg rows 0, ignored
// candidates and padding gt rows -1 with zero weights (a padding row keeps its own box).
// Nothing is drawn (the random states are left as they are); image_rois and fg_fraction are
// unused.
//
// Randomness: CPU uses MXNet's seeded CPU rand states (state s serves images s, s + 1024, ...),
// so mx.random.seed reproduces the sampling. The GPU path samples on the host with a
// std::mt19937 seeded from MXNet's GPU rand state 0, whose Philox counter it then advances
// (see gpu_host_rng), which is equally reproducible under mx.random.seed.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "proposal_target.h"
#include "simpledet_op.h"

namespace simpledet {
namespace {

const char* kOpName = "ProposalTarget";

float fraction_attr(const Attrs& attrs, const std::string& key, double fallback) {
  double v = attr_double(attrs, key, fallback);
  if (!(v >= 0.0 && v <= 1.0))
    throw AttrError(key + " must be in [0, 1], got " + std::to_string(v));
  return static_cast<float>(v);
}

ProposalTargetParam parse_param(const Attrs& attrs) {
  ProposalTargetParam p;
  if (!find_attr(attrs, "num_classes"))
    throw AttrError("num_classes is required (number of classes including background, >= 2)");
  int64_t num_classes = attr_int(attrs, "num_classes", 0);
  if (num_classes < 2 || num_classes > (1 << 20))
    throw AttrError("num_classes counts the background and must be >= 2, got " +
                    std::to_string(num_classes));
  p.num_classes = static_cast<int>(num_classes);
  int64_t image_rois = attr_int(attrs, "image_rois", 512);
  if (image_rois < 1 || image_rois > (1 << 24))
    throw AttrError("image_rois must be >= 1, got " + std::to_string(image_rois));
  p.image_rois = static_cast<int>(image_rois);
  double fg_fraction = attr_double(attrs, "fg_fraction", 0.25);
  if (!(fg_fraction >= 0.0 && fg_fraction <= 1.0))
    throw AttrError("fg_fraction must be in [0, 1], got " + std::to_string(fg_fraction));
  p.fg_fraction = fg_fraction;
  p.fg_thresh = fraction_attr(attrs, "fg_thresh", 0.5);
  p.bg_thresh_hi = fraction_attr(attrs, "bg_thresh_hi", 0.5);
  p.bg_thresh_lo = fraction_attr(attrs, "bg_thresh_lo", 0.0);
  if (p.bg_thresh_lo > p.bg_thresh_hi)
    throw AttrError("bg_thresh_lo (" + std::to_string(p.bg_thresh_lo) +
                    ") must be <= bg_thresh_hi (" + std::to_string(p.bg_thresh_hi) + ")");
  std::vector<double> means = attr_list(attrs, "bbox_means", {0., 0., 0., 0.});
  std::vector<double> stds = attr_list(attrs, "bbox_stds", {0.1, 0.1, 0.2, 0.2});
  if (means.size() != 4)
    throw AttrError("bbox_means must hold 4 numbers (dx, dy, dw, dh), got " +
                    std::to_string(means.size()));
  if (stds.size() != 4)
    throw AttrError("bbox_stds must hold 4 numbers (dx, dy, dw, dh), got " +
                    std::to_string(stds.size()));
  for (int i = 0; i < 4; ++i) {
    if (!std::isfinite(means[i])) throw AttrError("bbox_means must be finite");
    if (!(stds[i] > 0.0) || !std::isfinite(stds[i]))
      throw AttrError("bbox_stds must be positive, got " + std::to_string(stds[i]));
    p.means[i] = static_cast<float>(means[i]);
    p.stds[i] = static_cast<float>(stds[i]);
  }
  p.class_agnostic = attr_bool(attrs, "class_agnostic", false);
  p.add_gt = attr_bool(attrs, "add_gt", true);
  p.sample = attr_bool(attrs, "sample", true);
  p.output_gt_index = attr_bool(attrs, "output_gt_index", false);
  p.has_crowd = attr_bool(attrs, "has_crowd", false);
  if (!p.has_crowd && find_attr(attrs, "crowd_thresh"))
    throw AttrError("crowd_thresh applies to the crowd_boxes input: set has_crowd=True and pass "
                    "crowd_boxes as the third input");
  p.crowd_thresh = fraction_attr(attrs, "crowd_thresh", 0.7);
  return p;
}

int target_width(const ProposalTargetParam& p) { return p.class_agnostic ? 4 : 4 * p.num_classes; }

// Candidates per image (K): its R rois, then its G gt rows with add_gt.
int64_t num_candidates(const ProposalTargetParam& p, int64_t num_rois, int64_t num_gt) {
  return num_rois + (p.add_gt ? num_gt : 0);
}

// Output rows per image (S): image_rois when sampling, else one per candidate.
int64_t rows_per_image(const ProposalTargetParam& p, int64_t num_rois, int64_t num_gt) {
  return p.sample ? p.image_rois : num_candidates(p, num_rois, num_gt);
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  SIMPLEDET_TRY(kOpName, {
    ProposalTargetParam p = parse_param(attrs);
    *num_in = p.has_crowd ? 3 : 2;
    *num_out = p.output_gt_index ? 5 : 4;
    return MX_SUCCESS;
  })
}

const char* kInputNames[3] = {"rois", "gt_boxes", "crowd_boxes"};

MXReturnValue infer_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  const char* const* names = kInputNames;
  for (size_t i = 0; i < in->size() && i < 3; ++i) {
    if (in->at(i) != kFloat32) {
      MX_ERROR_MSG << kOpName << ": " << names[i] << " must be float32, got "
                   << dtype_name(in->at(i));
      return MX_FAIL;
    }
  }
  for (auto& t : *out) t = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  SIMPLEDET_TRY(kOpName, {
    ProposalTargetParam p = parse_param(attrs);
    const auto& rois = in->at(0);
    const auto& gt = in->at(1);
    // MXNet 1.x passes unknown dims (and zero-size ones: 0 means unknown there) as -1.
    const unsigned int unknown = static_cast<unsigned int>(-1);
    for (size_t i = 0; i < in->size() && i < 3; ++i) {
      for (unsigned int dim : in->at(i)) {
        if (dim == unknown || dim == 0) {
          MX_ERROR_MSG << kOpName << ": " << kInputNames[i] << " has an unknown or zero-size "
                       << "dimension; MXNet 1.x extension ops need known, non-empty input shapes "
                       << "(give images without boxes padding rows of class -1, images without "
                       << "crowd regions crowd rows of -1)";
          return MX_FAIL;
        }
      }
    }
    if (rois.size() != 2 || rois[1] != 5) {
      MX_ERROR_MSG << kOpName << ": rois must be (B*R, 5) [batch_idx, x1, y1, x2, y2], got "
                   << shape_str(rois);
      return MX_FAIL;
    }
    if (gt.size() != 3 || gt[2] != 5 || gt[0] < 1) {
      MX_ERROR_MSG << kOpName << ": gt_boxes must be (B, G, 5) [x1, y1, x2, y2, class] with "
                   << "B >= 1, got " << shape_str(gt);
      return MX_FAIL;
    }
    if (rois[0] % gt[0] != 0) {
      MX_ERROR_MSG << kOpName << ": rois has " << rois[0] << " rows, not a multiple of the "
                   << "batch size " << gt[0] << " (gt_boxes.shape[0]); rois must be B blocks "
                   << "of R rows";
      return MX_FAIL;
    }
    if (p.has_crowd) {
      const auto& crowd = in->at(2);
      if (crowd.size() != 3 || crowd[2] != 4 || crowd[0] != gt[0]) {
        MX_ERROR_MSG << kOpName << ": crowd_boxes must be (B, M, 4) [x1, y1, x2, y2] with B = "
                     << gt[0] << " (gt_boxes.shape[0]), got " << shape_str(crowd);
        return MX_FAIL;
      }
    }
    const int64_t S = rows_per_image(p, rois[0] / gt[0], gt[1]);
    const int64_t total = static_cast<int64_t>(gt[0]) * S;
    if (total > INT32_MAX) {
      MX_ERROR_MSG << kOpName << ": " << gt[0] << " images of " << S << " rows is too many "
                   << "output rows (at most 2^31 - 1)";
      return MX_FAIL;
    }
    unsigned int rows = static_cast<unsigned int>(total);
    unsigned int width = static_cast<unsigned int>(target_width(p));
    out->at(0) = {rows, 5};
    out->at(1) = {rows};
    out->at(2) = {rows, width};
    out->at(3) = {rows, width};
    if (p.output_gt_index) out->at(4) = {rows};
    return MX_SUCCESS;
  })
}

// ---------------------------------------------------------------------------------------------
// Host sampling, shared by the CPU and GPU paths.

// Uniform integer in [0, n), n >= 1, by rejection (unbiased, platform independent).
uint32_t rand_below(std::mt19937& rng, uint32_t n) {
  const uint32_t threshold = static_cast<uint32_t>(-n) % n;  // 2^32 mod n
  for (;;) {
    uint32_t r = static_cast<uint32_t>(rng());
    if (r >= threshold) return r % n;
  }
}

// k distinct entries of `pool` (k <= pool.size()) in ascending order; the whole pool (no random
// draw) when k == pool.size().
std::vector<int64_t> sample_without_replacement(std::vector<int64_t> pool, size_t k,
                                                std::mt19937& rng) {
  if (k < pool.size()) {
    for (size_t i = 0; i < k; ++i) {
      size_t j = i + rand_below(rng, static_cast<uint32_t>(pool.size() - i));
      std::swap(pool[i], pool[j]);
    }
    pool.resize(k);
    std::sort(pool.begin(), pool.end());
  }
  return pool;
}

struct ImageInput {
  const float* rois;     // R rows of 5 (box at +1)
  int64_t num_rois;      // R
  const float* gts;      // G rows of 5
  int num_gt;            // G
  const float* max_iou;  // one entry per candidate (candidate_overlap): R, then G with add_gt
  const int* argmax;
  const float* crowds;   // M rows of 4 (crowd_row_valid: region or padding); null without crowd
  int num_crowd;         // M, 0 without has_crowd
};

// One image's slice of the outputs: rois (S, 5), labels (S,), targets / weights (S, width),
// gt_index (S,) (null without output_gt_index).
struct ImageOutput {
  float* rois;
  float* labels;
  float* targets;
  float* weights;
  float* gt_index;
};

// What a candidate is (see the file comment); kPadding: a gt row of class <= 0.
enum class Kind { kForeground, kBackground, kIgnored, kPadding };

Kind candidate_kind(const ProposalTargetParam& p, const ImageInput& in, int64_t k) {
  if (k >= in.num_rois && !(in.gts[(k - in.num_rois) * 5 + 4] > 0.f)) return Kind::kPadding;
  if (in.argmax[k] >= 0) {  // without gt every candidate would be background
    const float o = in.max_iou[k];
    if (o >= p.fg_thresh) return Kind::kForeground;
    if (!(o >= p.bg_thresh_lo && o < p.bg_thresh_hi)) return Kind::kIgnored;
  }
  // A would-be background candidate on a crowd region is ignored (has_crowd only).
  if (in.num_crowd > 0 &&
      in_crowd_region(candidate_box(in.rois, in.num_rois, in.gts, k), in.crowds, in.num_crowd,
                      p.crowd_thresh))
    return Kind::kIgnored;
  return Kind::kBackground;
}

// Fills output row `row` of image b from candidate k (k < 0: a zero box): a fg row gets its
// matched gt's class, normalized target, unit weights and gt row index; a bg row label 0; any
// other row label -1. Targets and weights must be zero and gt_index -1 beforehand.
void write_row(const ProposalTargetParam& p, int b, const ImageInput& in, const ImageOutput& out,
               int64_t row, int64_t k, Kind kind) {
  float* r = out.rois + row * 5;
  r[0] = static_cast<float>(b);
  if (k < 0) {
    std::fill_n(r + 1, 4, 0.f);
  } else {
    std::copy_n(candidate_box(in.rois, in.num_rois, in.gts, k), 4, r + 1);
  }
  if (kind != Kind::kForeground) {
    out.labels[row] = kind == Kind::kBackground ? 0.f : -1.f;
    return;
  }
  const float* box = candidate_box(in.rois, in.num_rois, in.gts, k);
  const float* gt = in.gts + static_cast<int64_t>(in.argmax[k]) * 5;
  const int cls = static_cast<int>(gt[4]);
  out.labels[row] = static_cast<float>(cls);
  float delta[4];
  box_encode(box, gt, delta);
  const int64_t width = target_width(p);
  const int col = p.class_agnostic ? 0 : 4 * cls;
  for (int i = 0; i < 4; ++i) {
    out.targets[row * width + col + i] = (delta[i] - p.means[i]) / p.stds[i];
    out.weights[row * width + col + i] = 1.f;
  }
  if (out.gt_index != nullptr) out.gt_index[row] = static_cast<float>(in.argmax[k]);
}

// The S = rows_per_image rows of image b (see the file comment).
void sample_image(const ProposalTargetParam& p, int b, const ImageInput& in, int64_t S,
                  std::mt19937& rng, const ImageOutput& out) {
  const int64_t K = num_candidates(p, in.num_rois, in.num_gt);
  const int64_t width = target_width(p);
  std::fill_n(out.targets, S * width, 0.f);
  std::fill_n(out.weights, S * width, 0.f);
  if (out.gt_index != nullptr) std::fill_n(out.gt_index, S, -1.f);
  if (!p.sample) {  // S == K: row k is candidate k, nothing drawn
    for (int64_t k = 0; k < K; ++k) write_row(p, b, in, out, k, k, candidate_kind(p, in, k));
    return;
  }

  std::vector<int64_t> fg, bg;
  int64_t first = -1;
  for (int64_t k = 0; k < K; ++k) {
    const Kind kind = candidate_kind(p, in, k);
    if (kind == Kind::kPadding) continue;
    if (first < 0) first = k;
    if (kind == Kind::kForeground) fg.push_back(k);
    else if (kind == Kind::kBackground) bg.push_back(k);
  }
  const int64_t quota = static_cast<int64_t>(std::nearbyint(p.fg_fraction * S));
  const int64_t num_fg = std::min<int64_t>(quota, static_cast<int64_t>(fg.size()));
  std::vector<int64_t> fg_keep = sample_without_replacement(std::move(fg), num_fg, rng);
  const int64_t num_bg = S - num_fg;
  std::vector<int64_t> bg_keep;
  if (static_cast<int64_t>(bg.size()) >= num_bg) {
    bg_keep = sample_without_replacement(std::move(bg), num_bg, rng);
  } else if (!bg.empty()) {
    bg_keep = bg;
    while (static_cast<int64_t>(bg_keep.size()) < num_bg)
      bg_keep.push_back(bg[rand_below(rng, static_cast<uint32_t>(bg.size()))]);
    std::sort(bg_keep.begin(), bg_keep.end());
  }

  int64_t row = 0;
  for (int64_t k : fg_keep) write_row(p, b, in, out, row++, k, Kind::kForeground);
  for (int64_t k : bg_keep) write_row(p, b, in, out, row++, k, Kind::kBackground);
  for (; row < S; ++row) write_row(p, b, in, out, row, first, Kind::kIgnored);
}

// ---------------------------------------------------------------------------------------------
// CPU overlaps: candidate_overlap for all K candidates of an image, 8 candidates at a time. The
// arithmetic is box_iou's, operation for operation (fminf/fmaxf NaN rules included), so max_iou
// is bit-identical to candidate_overlap (and to the CUDA kernel); ties keep the first gt.
typedef float v8sf __attribute__((vector_size(32)));
typedef int32_t v8si __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__)
#define SD_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SD_SIMD_CLONES
#endif

// fminf / fmaxf: a NaN operand yields the other operand.
inline v8sf vmin(v8sf a, v8sf b) { return ((a < b) | (b != b)) ? a : b; }
inline v8sf vmax(v8sf a, v8sf b) { return ((a > b) | (b != b)) ? a : b; }

// boxes: SoA x1, y1, x2, y2 of k8 (a multiple of 8) candidates; valid: rows of `gts` with
// class > 0, ascending. Writes max_iou / argmax for all k8 candidates.
SD_SIMD_CLONES void overlaps_cpu(const float* x1, const float* y1, const float* x2,
                                 const float* y2, int64_t k8, const float* gts,
                                 const int* valid, int num_valid, float* max_iou, int* argmax) {
  for (int64_t k = 0; k < k8; k += 8) {
    v8sf ax1, ay1, ax2, ay2;
    std::memcpy(&ax1, x1 + k, sizeof(v8sf));
    std::memcpy(&ay1, y1 + k, sizeof(v8sf));
    std::memcpy(&ax2, x2 + k, sizeof(v8sf));
    std::memcpy(&ay2, y2 + k, sizeof(v8sf));
    const v8sf area_a = (ax2 - ax1 + 1.f) * (ay2 - ay1 + 1.f);
    v8sf best = {};
    v8si arg = {-1, -1, -1, -1, -1, -1, -1, -1};
    for (int v = 0; v < num_valid; ++v) {
      const float* g = gts + static_cast<int64_t>(valid[v]) * 5;
      const float area_b = box_area(g);
      const v8sf w = vmin(ax2, v8sf{} + g[2]) - vmax(ax1, v8sf{} + g[0]) + 1.f;
      const v8sf h = vmin(ay2, v8sf{} + g[3]) - vmax(ay1, v8sf{} + g[1]) + 1.f;
      const v8sf inter = w * h;
      v8sf iou = inter / (area_a + area_b - inter);
      iou = ((w <= 0.f) | (h <= 0.f)) ? v8sf{} : iou;
      // candidate_overlap: the first valid gt always sets, later ones when strictly greater.
      const v8si take = v == 0 ? v8si{} - 1 : (iou > best);
      best = take ? iou : best;
      arg = take ? v8si{} + valid[v] : arg;
    }
    std::memcpy(max_iou + k, &best, sizeof(v8sf));
    std::memcpy(argmax + k, &arg, sizeof(v8si));
  }
}

// Every gt class must be padding (<= 0) or an integer in [1, num_classes - 1].
void check_gt_classes(const float* gt, int batch, int num_gt, int num_classes) {
  for (int64_t r = 0; r < static_cast<int64_t>(batch) * num_gt; ++r) {
    float c = gt[r * 5 + 4];
    if (!(c > 0.f)) continue;
    if (c != std::floor(c) || c >= static_cast<float>(num_classes)) {
      throw std::runtime_error(
          "gt_boxes[" + std::to_string(r / num_gt) + ", " + std::to_string(r % num_gt) +
          "] has class " + std::to_string(c) + "; classes must be integers in [1, " +
          std::to_string(num_classes - 1) + "] (num_classes - 1), or <= 0 for padding rows");
    }
  }
}

struct Dims {
  int batch, num_gt, num_crowd;  // num_crowd: M, 0 without has_crowd
  int64_t rois_per_image;
};

Dims read_dims(const ProposalTargetParam& p, const std::vector<MXTensor>& in) {
  const size_t expected = p.has_crowd ? 3 : 2;
  if (in.size() != expected)
    throw std::runtime_error("expected " + std::to_string(expected) + " inputs, got " +
                             std::to_string(in.size()));
  const MXTensor& rois = in[0];
  const MXTensor& gt = in[1];
  Dims d;
  d.batch = static_cast<int>(gt.shape[0]);
  d.num_gt = static_cast<int>(gt.shape[1]);
  d.num_crowd = 0;
  int64_t n = rois.shape[0];
  if (d.batch < 1 || n % d.batch != 0)
    throw std::runtime_error("rois has " + std::to_string(n) + " rows, not a multiple of the "
                             "batch size " + std::to_string(d.batch));
  d.rois_per_image = n / d.batch;
  if (p.has_crowd) {
    const MXTensor& crowd = in[2];
    if (crowd.shape.size() != 3 || crowd.shape[0] != d.batch || crowd.shape[2] != 4)
      throw std::runtime_error("crowd_boxes must be (B, M, 4) with B = " +
                               std::to_string(d.batch));
    d.num_crowd = static_cast<int>(crowd.shape[1]);
  }
  return d;
}

// Image b's slice of the outputs: outs holds the 4 (5 with output_gt_index) output arrays.
ImageOutput image_slice(const ProposalTargetParam& p, float* const* outs, int64_t b, int64_t S) {
  const int64_t width = target_width(p);
  return {outs[0] + b * S * 5, outs[1] + b * S, outs[2] + b * S * width,
          outs[3] + b * S * width, p.output_gt_index ? outs[4] + b * S : nullptr};
}

size_t num_outputs(const ProposalTargetParam& p) { return p.output_gt_index ? 5 : 4; }

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    ProposalTargetParam p = parse_param(attrs);
    Dims d = read_dims(p, *in);
    const float* rois = in->at(0).data<float>();
    const float* gt = in->at(1).data<float>();
    const float* crowd = p.has_crowd ? in->at(2).data<float>() : nullptr;
    check_gt_classes(gt, d.batch, d.num_gt, p.num_classes);
    mx_cpu_rand_t* states = res.get_cpu_rand_states();
    if (states == nullptr) throw std::runtime_error("MXNet passed no CPU random states");
    if (out->size() != num_outputs(p))
      throw std::runtime_error("expected " + std::to_string(num_outputs(p)) + " outputs, got " +
                               std::to_string(out->size()));
    float* outs[5] = {};
    for (size_t i = 0; i < out->size(); ++i) outs[i] = out->at(i).data<float>();
    const int64_t S = rows_per_image(p, d.rois_per_image, d.num_gt);
    const int64_t K = num_candidates(p, d.rois_per_image, d.num_gt);
    // One rand state per slot; slot s serves images s, s + slots, ... so no state is shared
    // between threads and the result does not depend on the thread count.
    const int64_t slots = std::min<int64_t>(d.batch, MX_NUM_CPU_RANDOM_STATES);
    const int64_t K8 = (K + 7) / 8 * 8;
    parallel_for(slots, [&](int64_t s) {
      std::vector<float> max_iou(K8), soa(4 * K8, 0.f);
      std::vector<int> argmax(K8), valid;
      for (int64_t b = s; b < d.batch; b += slots) {
        const float* image_rois = rois + b * d.rois_per_image * 5;
        const float* image_gts = gt + b * d.num_gt * 5;
        for (int64_t k = 0; k < K; ++k) {
          const float* box = candidate_box(image_rois, d.rois_per_image, image_gts, k);
          for (int c = 0; c < 4; ++c) soa[c * K8 + k] = box[c];
        }
        valid.clear();
        for (int j = 0; j < d.num_gt; ++j)
          if (image_gts[j * 5 + 4] > 0.f) valid.push_back(j);
        overlaps_cpu(soa.data(), soa.data() + K8, soa.data() + 2 * K8, soa.data() + 3 * K8, K8,
                     image_gts, valid.data(), static_cast<int>(valid.size()), max_iou.data(),
                     argmax.data());
        ImageInput img{image_rois, d.rois_per_image, image_gts, d.num_gt, max_iou.data(),
                       argmax.data(),
                       crowd ? crowd + b * static_cast<int64_t>(d.num_crowd) * 4 : nullptr,
                       d.num_crowd};
        sample_image(p, static_cast<int>(b), img, S, states[s], image_slice(p, outs, b, S));
      }
    });
    return MX_SUCCESS;
  })
}

#ifdef SIMPLEDET_WITH_CUDA
// A host generator for the GPU path. MXNet hands GPU ops only device-side Philox states
// (curandStatePhilox4_32_10_t, whose first member is the 128-bit counter `ctr`, then the
// cached `output`, then the 64-bit `key`). We read the first 40 bytes of state 0 (ctr, output,
// key) to seed a std::mt19937, then advance its counter by one block (as if 4 numbers had been
// drawn), so consecutive calls differ and mx.random.seed (which re-initializes the states)
// reproduces the sequence.
std::mt19937 gpu_host_rng(const OpResource& res, void* stream) {
  void* states = static_cast<void*>(res.get_gpu_rand_states());
  if (states == nullptr) return std::mt19937(0);
  uint32_t words[10];
  cuda::copy_to_host_sync(words, states, sizeof(words), stream);
  std::seed_seq seq(words, words + 10);
  std::mt19937 rng(seq);
  for (int i = 0; i < 4; ++i) {  // ctr += 1 with carry
    if (++words[i] != 0) break;
  }
  cuda::copy_to_device_sync(states, words, 4 * sizeof(uint32_t), stream);
  return rng;
}

MXReturnValue forward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                          std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    ProposalTargetParam p = parse_param(attrs);
    Dims d = read_dims(p, *in);
    void* stream = res.get_cuda_stream();
    if (out->size() != num_outputs(p))
      throw std::runtime_error("expected " + std::to_string(num_outputs(p)) + " outputs, got " +
                               std::to_string(out->size()));
    // The kernel computes all R + G candidates of an image (stride K); sample_image reads the
    // first num_candidates of them.
    const int64_t R = d.rois_per_image, K = R + d.num_gt;
    const int64_t S = rows_per_image(p, R, d.num_gt), width = target_width(p);
    std::vector<float> rois(d.batch * R * 5), gt(static_cast<int64_t>(d.batch) * d.num_gt * 5);
    if (!rois.empty())
      cuda::copy_to_host_sync(rois.data(), in->at(0).data<float>(), rois.size() * 4, stream);
    if (!gt.empty())
      cuda::copy_to_host_sync(gt.data(), in->at(1).data<float>(), gt.size() * 4, stream);
    check_gt_classes(gt.data(), d.batch, d.num_gt, p.num_classes);
    // The crowd rows go to the host with the rest: the crowd rule is applied while sampling.
    std::vector<float> crowd(static_cast<int64_t>(d.batch) * d.num_crowd * 4);
    if (!crowd.empty())
      cuda::copy_to_host_sync(crowd.data(), in->at(2).data<float>(), crowd.size() * 4, stream);

    const int64_t total = d.batch * K;
    std::vector<float> max_iou(total);
    std::vector<int> argmax(total);
    if (total > 0) {
      // One allocation: alloc_gpu hands out MXNet's temp space, so a second call may reuse it.
      if (total * 8 > INT32_MAX) throw std::runtime_error("too many candidates for temp space");
      char* space = static_cast<char*>(res.alloc_gpu(static_cast<int>(total * 8)));
      float* d_iou = reinterpret_cast<float*>(space);
      int* d_arg = reinterpret_cast<int*>(space + total * 4);
      proposal_target_overlaps_gpu(in->at(0).data<float>(), in->at(1).data<float>(), d.batch,
                                   R, d.num_gt, d_iou, d_arg, stream);
      cuda::copy_to_host_sync(max_iou.data(), d_iou, total * 4, stream);
      cuda::copy_to_host_sync(argmax.data(), d_arg, total * 4, stream);
    }
    std::string err = cuda::last_error();
    if (!err.empty()) throw std::runtime_error("CUDA error: " + err);

    const int64_t rows = d.batch * S;
    std::vector<float> host[5] = {std::vector<float>(rows * 5), std::vector<float>(rows),
                                  std::vector<float>(rows * width),
                                  std::vector<float>(rows * width), std::vector<float>()};
    if (p.output_gt_index) host[4].resize(rows);
    float* outs[5];
    for (int i = 0; i < 5; ++i) outs[i] = host[i].data();
    // Without sample nothing is drawn, and the GPU random state is left as it is.
    std::mt19937 rng = p.sample ? gpu_host_rng(res, stream) : std::mt19937(0);
    for (int b = 0; b < d.batch; ++b) {
      const int64_t crowd_offset = static_cast<int64_t>(b) * d.num_crowd * 4;
      ImageInput img{rois.data() + b * R * 5, R, gt.data() + static_cast<int64_t>(b) * d.num_gt * 5,
                     d.num_gt, max_iou.data() + b * K, argmax.data() + b * K,
                     crowd.empty() ? nullptr : crowd.data() + crowd_offset, d.num_crowd};
      sample_image(p, b, img, S, rng, image_slice(p, outs, b, S));
    }
    for (size_t i = 0; i < num_outputs(p); ++i)
      cuda::copy_to_device_sync(out->at(i).data_ptr, host[i].data(), host[i].size() * 4, stream);
    return MX_SUCCESS;
  })
}
#endif

}  // namespace
}  // namespace simpledet

SIMPLEDET_REGISTER_NO_GRAD_OP(_contrib_ProposalTarget, simpledet);
