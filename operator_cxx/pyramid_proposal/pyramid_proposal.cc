// Pyramid RPN proposals, CPU implementation and registration as _contrib_PyramidProposal.
//
// Inputs: cls_prob_0..cls_prob_{L-1}, each (B, A, H_l, W_l) foreground probabilities;
// bbox_pred_0..bbox_pred_{L-1}, each (B, 4A, H_l, W_l), channel a*4+k = delta k of anchor a;
// im_info (B, 3) [height, width, scale]. Outputs: rois (B * post, 5) [batch_idx, x1, y1, x2, y2]
// and scores (B * post, 1). Per image and level: decode, clip, drop boxes smaller than
// min_size * scale, keep the pre_nms_top_n best; then the levels' survivors are merged and go
// through one greedy NMS; the first post_nms_top_n are written, padded by repetition. The
// gradient is zero.
#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "anchors.h"
#include "pyramid_proposal.h"
#include "simpledet_op.h"

namespace simpledet {
namespace {

const char* kOpName = "PyramidProposal";

struct Parsed {
  PyramidProposalParam p;
  std::vector<float> base_anchors;  // (L, A, 4)
};

Parsed parse_param(const Attrs& attrs) {
  Parsed r;
  PyramidProposalParam& p = r.p;
  std::vector<double> strides = attr_list(attrs, "feature_strides", {});
  if (strides.empty() || strides.size() > static_cast<size_t>(kPPMaxLevels))
    throw AttrError("feature_strides must list 1 to 8 strides, e.g. (4, 8, 16, 32, 64)");
  p.num_levels = static_cast<int>(strides.size());
  for (int i = 0; i < p.num_levels; ++i) {
    if (!(strides[i] > 0)) throw AttrError("feature_strides must be positive");
    if (i > 0 && strides[i] <= strides[i - 1])
      throw AttrError("feature_strides must be strictly ascending");
    p.strides[i] = static_cast<float>(strides[i]);
  }
  std::vector<double> scales = attr_list(attrs, "scales", {8});
  std::vector<double> ratios = attr_list(attrs, "ratios", {0.5, 1, 2});
  if (scales.empty() || ratios.empty()) throw AttrError("scales and ratios must not be empty");
  for (double s : scales)
    if (!(s > 0)) throw AttrError("scales must be positive");
  for (double s : ratios)
    if (!(s > 0)) throw AttrError("ratios must be positive");
  p.num_anchors = static_cast<int>(scales.size() * ratios.size());
  for (int i = 0; i < p.num_levels; ++i)
    append_base_anchors(strides[i], scales, ratios, &r.base_anchors);
  int64_t pre = attr_int(attrs, "pre_nms_top_n", 2000);
  int64_t post = attr_int(attrs, "post_nms_top_n", 1000);
  if (pre <= 0 || pre > INT_MAX) throw AttrError("pre_nms_top_n must be a positive integer");
  if (post <= 0 || post > INT_MAX) throw AttrError("post_nms_top_n must be a positive integer");
  p.pre_nms_top_n = static_cast<int>(pre);
  p.post_nms_top_n = static_cast<int>(post);
  double thresh = attr_double(attrs, "nms_threshold", 0.7);
  if (!(thresh >= 0 && thresh <= 1)) throw AttrError("nms_threshold must be in [0, 1]");
  p.nms_threshold = static_cast<float>(thresh);
  double min_size = attr_double(attrs, "min_size", 0);
  if (!(min_size >= 0)) throw AttrError("min_size must be >= 0");
  p.min_size = static_cast<float>(min_size);
  return r;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  SIMPLEDET_TRY(kOpName, {
    *num_in = 2 * parse_param(attrs).p.num_levels + 1;
    *num_out = 2;
    return MX_SUCCESS;
  })
}

std::string input_name(size_t i, int levels) {
  if (i < static_cast<size_t>(levels)) return "cls_prob_" + std::to_string(i);
  if (i < 2 * static_cast<size_t>(levels)) return "bbox_pred_" + std::to_string(i - levels);
  return "im_info";
}

MXReturnValue infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  int levels = static_cast<int>(in->size() / 2);
  for (size_t i = 0; i < in->size(); ++i) {
    if (in->at(i) != kFloat32) {
      MX_ERROR_MSG << kOpName << ": input " << input_name(i, levels) << " is "
                   << dtype_name(in->at(i)) << ", but all inputs must be float32 (cast "
                   << "fp16/bf16 RPN outputs and im_info to float32 before this op)";
      return MX_FAIL;
    }
  }
  out->at(0) = kFloat32;
  out->at(1) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  SIMPLEDET_TRY(kOpName, {
    Parsed r = parse_param(attrs);
    const int levels = r.p.num_levels;
    const unsigned int a = static_cast<unsigned int>(r.p.num_anchors);
    const auto& first = in->at(0);
    if (first.size() != 4) {
      MX_ERROR_MSG << kOpName << ": cls_prob_0 must be (B, A, H, W), got " << shape_str(first);
      return MX_FAIL;
    }
    const unsigned int batch = first[0];
    for (int l = 0; l < levels; ++l) {
      const auto& cls = in->at(l);
      const auto& box = in->at(levels + l);
      if (cls.size() != 4 || cls[0] != batch || cls[1] != a) {
        MX_ERROR_MSG << kOpName << ": cls_prob_" << l << " must be (B, A, H, W) with B = "
                     << batch << " and A = len(ratios) * len(scales) = " << a << ", got "
                     << shape_str(cls);
        return MX_FAIL;
      }
      if (box.size() != 4 || box[0] != batch || box[1] != 4 * a || box[2] != cls[2] ||
          box[3] != cls[3]) {
        MX_ERROR_MSG << kOpName << ": bbox_pred_" << l << " must be (B, 4A, H, W) = (" << batch
                     << ", " << 4 * a << ", " << cls[2] << ", " << cls[3] << ") to match "
                     << "cls_prob_" << l << " " << shape_str(cls) << ", got " << shape_str(box);
        return MX_FAIL;
      }
    }
    const auto& info = in->at(2 * levels);
    if (info.size() != 2 || info[0] != batch || info[1] != 3) {
      MX_ERROR_MSG << kOpName << ": im_info must be (B, 3) = (" << batch << ", 3) [height, "
                   << "width, scale], got " << shape_str(info);
      return MX_FAIL;
    }
    const unsigned int rows = batch * static_cast<unsigned int>(r.p.post_nms_top_n);
    out->at(0) = {rows, 5};
    out->at(1) = {rows, 1};
    return MX_SUCCESS;
  })
}

struct Candidate {
  float box[4];
  float score;
};

struct Dims {
  int batch;
  std::vector<int> hs, ws;
};

Dims read_dims(const std::vector<MXTensor>& in, int levels) {
  Dims d;
  d.batch = static_cast<int>(in[0].shape[0]);
  for (int l = 0; l < levels; ++l) {
    d.hs.push_back(static_cast<int>(in[l].shape[2]));
    d.ws.push_back(static_cast<int>(in[l].shape[3]));
  }
  return d;
}

// Decodes one (image, level) and returns its pre_nms_top_n best surviving boxes, by score
// descending, ties by lower anchor index ((y, x, a) order).
std::vector<Candidate> level_candidates(const Parsed& r, int level, int b, const Dims& d,
                                        const float* cls, const float* bbox,
                                        const float* im_info) {
  const PyramidProposalParam& p = r.p;
  const int a_num = p.num_anchors, h = d.hs[level], w = d.ws[level];
  const int64_t plane = static_cast<int64_t>(h) * w, n = plane * a_num;
  const float* cls_b = cls + b * a_num * plane;
  const float* bbox_b = bbox + b * 4 * a_num * plane;
  const float* info = im_info + 3 * b;
  const float min_px = p.min_size * info[2];
  const float* base = r.base_anchors.data() + static_cast<int64_t>(level) * a_num * 4;
  std::vector<float> boxes(n * 4), scores(n);
  std::vector<int64_t> idx;
  idx.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    int a = static_cast<int>(i % a_num);
    int x = static_cast<int>((i / a_num) % w);
    int y = static_cast<int>(i / (static_cast<int64_t>(a_num) * w));
    if (pp_make_box(p.strides[level], base, cls_b, bbox_b, h, w, y, x, a, info[0], info[1],
                    min_px, &boxes[i * 4], &scores[i]))
      idx.push_back(i);
  }
  // A strict total order (NaN scores were dropped), so partial selection + sort equals a
  // stable sort by descending score.
  auto better = [&scores](int64_t i, int64_t j) {
    return scores[i] > scores[j] || (scores[i] == scores[j] && i < j);
  };
  const size_t k = std::min(idx.size(), static_cast<size_t>(p.pre_nms_top_n));
  if (k < idx.size()) {
    std::nth_element(idx.begin(), idx.begin() + k, idx.end(), better);
    idx.resize(k);
  }
  std::sort(idx.begin(), idx.end(), better);
  std::vector<Candidate> out(idx.size());
  for (size_t j = 0; j < idx.size(); ++j) {
    std::copy_n(&boxes[idx[j] * 4], 4, out[j].box);
    out[j].score = scores[idx[j]];
  }
  return out;
}

// Merges an image's level candidates (level 0 first), sorts them stably by score, runs greedy
// NMS and writes the image's post_nms_top_n output rows.
void image_output(const PyramidProposalParam& p, int b,
                  const std::vector<Candidate>* levels, float* rois, float* scores) {
  std::vector<Candidate> all;
  for (int l = 0; l < p.num_levels; ++l) all.insert(all.end(), levels[l].begin(), levels[l].end());
  std::stable_sort(all.begin(), all.end(),
                   [](const Candidate& x, const Candidate& y) { return x.score > y.score; });
  // Greedy NMS. The inner loop is pp_iou(box i, box j) > threshold written branch-free over
  // structure-of-arrays copies so that it vectorizes; the arithmetic (and so every decision)
  // is the same as pp_iou's, which the CUDA mask kernel uses.
  const size_t n = all.size();
  std::vector<float> x1(n), y1(n), x2(n), y2(n), area(n);
  for (size_t i = 0; i < n; ++i) {
    x1[i] = all[i].box[0];
    y1[i] = all[i].box[1];
    x2[i] = all[i].box[2];
    y2[i] = all[i].box[3];
    area[i] = pp_area(all[i].box);
  }
  std::vector<size_t> keep;
  std::vector<unsigned char> suppressed(n, 0);
  const size_t post = static_cast<size_t>(p.post_nms_top_n);
  const float thresh = p.nms_threshold;
  for (size_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    keep.push_back(i);
    if (keep.size() == post) break;
    const float ax1 = x1[i], ay1 = y1[i], ax2 = x2[i], ay2 = y2[i], aa = area[i];
    for (size_t j = i + 1; j < n; ++j) {
      float w = std::min(ax2, x2[j]) - std::max(ax1, x1[j]) + 1.f;
      float h = std::min(ay2, y2[j]) - std::max(ay1, y1[j]) + 1.f;
      float inter = w * h;
      float iou = inter / ((aa + area[j]) - inter);
      suppressed[j] |= static_cast<unsigned char>((w > 0.f) & (h > 0.f) & (iou > thresh));
    }
  }
  for (size_t j = 0; j < post; ++j) {
    float* row = rois + (static_cast<int64_t>(b) * post + j) * 5;
    float* score = scores + static_cast<int64_t>(b) * post + j;
    row[0] = static_cast<float>(b);
    if (keep.empty()) {
      std::fill_n(row + 1, 4, 0.f);
      *score = 0.f;
    } else {
      const Candidate& c = all[keep[j % keep.size()]];
      std::copy_n(c.box, 4, row + 1);
      *score = c.score;
    }
  }
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource&) {
  SIMPLEDET_TRY(kOpName, {
    Parsed r = parse_param(attrs);
    const int levels = r.p.num_levels;
    Dims d = read_dims(*in, levels);
    const float* im_info = in->at(2 * levels).data<float>();
    std::vector<std::vector<Candidate>> cands(static_cast<size_t>(d.batch) * levels);
    parallel_for(static_cast<int64_t>(d.batch) * levels, [&](int64_t job) {
      int b = static_cast<int>(job / levels), l = static_cast<int>(job % levels);
      cands[job] = level_candidates(r, l, b, d, in->at(l).data<float>(),
                                    in->at(levels + l).data<float>(), im_info);
    });
    float* rois = out->at(0).data<float>();
    float* scores = out->at(1).data<float>();
    parallel_for(d.batch, [&](int64_t b) {
      image_output(r.p, static_cast<int>(b), &cands[b * levels], rois, scores);
    });
    return MX_SUCCESS;
  })
}

#ifdef SIMPLEDET_WITH_CUDA
MXReturnValue forward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                          std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    Parsed r = parse_param(attrs);
    const int levels = r.p.num_levels;
    Dims d = read_dims(*in, levels);
    std::vector<const float*> cls, bbox;
    for (int l = 0; l < levels; ++l) {
      cls.push_back(in->at(l).data<float>());
      bbox.push_back(in->at(levels + l).data<float>());
    }
    size_t bytes = pyramid_proposal_gpu_workspace(r.p, d.batch, d.hs.data(), d.ws.data());
    if (bytes > static_cast<size_t>(INT_MAX))
      throw std::runtime_error("needs " + std::to_string(bytes) + " bytes of GPU workspace, "
                               "more than MXNet's allocator hands out (2 GiB); lower "
                               "pre_nms_top_n or the batch size");
    void* ws = bytes ? res.alloc_gpu(static_cast<int>(bytes)) : nullptr;
    if (bytes && !ws) throw std::runtime_error("could not allocate the GPU workspace");
    pyramid_proposal_forward_gpu(r.p, d.batch, d.hs.data(), d.ws.data(), cls.data(),
                                 bbox.data(), in->at(2 * levels).data<float>(),
                                 r.base_anchors.data(), out->at(0).data<float>(),
                                 out->at(1).data<float>(), ws, bytes, res.get_cuda_stream());
    return MX_SUCCESS;
  })
}
#endif

}  // namespace
}  // namespace simpledet

SIMPLEDET_REGISTER_NO_GRAD_OP(_contrib_PyramidProposal, simpledet);
