// RetinaNet post-processing, CPU implementation and registration as _contrib_RetinaPostprocess.
//
// Inputs (float32): cls_prob_0..cls_prob_{L-1}, level l (B, A * C, H_l, W_l) sigmoid
// probabilities, channel a * C + c = class c + 1 of anchor a (anchor-major, as the RPN's
// bbox layout); bbox_delta_0..bbox_delta_{L-1}, level l (B, 4A, H_l, W_l), channel a * 4 + k =
// delta k (dx, dy, dw, dh) of anchor a; im_info (B, 3) [height, width, scale]. Anchors come
// from the attrs exactly as in PyramidProposal (anchors.h; order (y, x, a)).
// Output: dets (B, max_det, 6) [x1, y1, x2, y2, score, class], class in 1..C, sorted by
// descending score; unused rows are all -1 (the layout of DetectionPostprocess).
//
// Per image and level: scores > score_thresh, the pre_nms_top_n best (ties: lower candidate
// number o = (a * C + c) * H * W + y * W + x first), decoded (d * stds + means, "+1" box
// decode with the dw/dh clip) and clipped to the image. Per image: the levels' candidates
// are merged (level 0 first) and stably sorted by score, a greedy NMS runs per class (IoU >
// nms_threshold suppresses a lower-ranked box of the same class) and the first max_det
// survivors are written. The registered backward writes zero gradients.
//
// CPU: the score scan runs in parallel over chunks of every (image, level), each chunk keeping
// its own top-k; then per (image, level) merge + decode, then per image NMS.
// GPU: threshold, top-k and decode on the device (retina_postprocess.cu); the <= L * top-k
// candidates per image are copied to the host for the class-aware NMS (the same code as the
// CPU path; per-class lists are short), and the dets are copied back.
#include <algorithm>
#include <climits>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "anchors.h"
#include "retina_postprocess.h"
#include "simpledet_op.h"

namespace simpledet {
namespace {

const char* kOpName = "RetinaPostprocess";

struct Parsed {
  RetinaPostParam p;
  std::vector<float> base_anchors;  // (L, A, 4)
};

std::vector<double> positive_list(const Attrs& attrs, const std::string& key,
                                  const std::vector<double>& fallback) {
  std::vector<double> v = attr_list(attrs, key, fallback);
  if (v.empty()) throw AttrError(key + " must not be empty");
  for (double x : v)
    if (!(x > 0 && std::isfinite(x))) throw AttrError(key + " must hold positive numbers");
  return v;
}

Parsed parse_param(const Attrs& attrs) {
  Parsed r;
  RetinaPostParam& p = r.p;
  std::vector<double> strides = attr_list(attrs, "feature_strides", {});
  if (strides.empty() || strides.size() > static_cast<size_t>(kRPMaxLevels))
    throw AttrError("feature_strides must list 1 to 8 strides, e.g. (8, 16, 32, 64, 128)");
  p.num_levels = static_cast<int>(strides.size());
  for (int i = 0; i < p.num_levels; ++i) {
    if (!(strides[i] > 0)) throw AttrError("feature_strides must be positive");
    if (i > 0 && strides[i] <= strides[i - 1])
      throw AttrError("feature_strides must be strictly ascending");
    p.strides[i] = static_cast<float>(strides[i]);
  }
  const double third = std::pow(2.0, 1.0 / 3.0);
  std::vector<double> scales = positive_list(attrs, "scales", {4.0, 4.0 * third,
                                                               4.0 * third * third});
  std::vector<double> ratios = positive_list(attrs, "ratios", {0.5, 1.0, 2.0});
  p.num_anchors = static_cast<int>(scales.size() * ratios.size());
  for (int i = 0; i < p.num_levels; ++i)
    append_base_anchors(strides[i], scales, ratios, &r.base_anchors);
  std::vector<double> means = attr_list(attrs, "bbox_means", {0., 0., 0., 0.});
  std::vector<double> stds = attr_list(attrs, "bbox_stds", {1., 1., 1., 1.});
  if (means.size() != 4) throw AttrError("bbox_means must have 4 entries (dx, dy, dw, dh)");
  if (stds.size() != 4) throw AttrError("bbox_stds must have 4 entries (dx, dy, dw, dh)");
  for (int i = 0; i < 4; ++i) {
    p.means[i] = static_cast<float>(means[i]);
    p.stds[i] = static_cast<float>(stds[i]);
  }
  double score_thresh = attr_double(attrs, "score_thresh", 0.05);
  if (!std::isfinite(score_thresh)) throw AttrError("score_thresh must be a finite number");
  p.score_thresh = static_cast<float>(score_thresh);
  double nms = attr_double(attrs, "nms_threshold", 0.5);
  if (!(nms >= 0.0 && nms <= 1.0))
    throw AttrError("nms_threshold must be in [0, 1], got " + std::to_string(nms));
  p.nms_threshold = static_cast<float>(nms);
  int64_t pre = attr_int(attrs, "pre_nms_top_n", 1000);
  int64_t max_det = attr_int(attrs, "max_det", 100);
  if (pre < 1 || pre > INT_MAX) throw AttrError("pre_nms_top_n must be a positive integer");
  if (max_det < 1 || max_det > INT_MAX) throw AttrError("max_det must be a positive integer");
  p.pre_nms_top_n = static_cast<int>(pre);
  p.max_det = static_cast<int>(max_det);
  return r;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  SIMPLEDET_TRY(kOpName, {
    *num_in = 2 * parse_param(attrs).p.num_levels + 1;
    *num_out = 1;
    return MX_SUCCESS;
  })
}

std::string input_name(size_t i, int levels) {
  if (i < static_cast<size_t>(levels)) return "cls_prob_" + std::to_string(i);
  if (i < 2 * static_cast<size_t>(levels)) return "bbox_delta_" + std::to_string(i - levels);
  return "im_info";
}

MXReturnValue infer_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  const int levels = static_cast<int>(in->size() / 2);
  for (size_t i = 0; i < in->size(); ++i) {
    if (in->at(i) != kFloat32) {
      MX_ERROR_MSG << kOpName << ": " << input_name(i, levels) << " must be float32, got "
                   << dtype_name(in->at(i)) << " (cast the head outputs to float32)";
      return MX_FAIL;
    }
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  SIMPLEDET_TRY(kOpName, {
    const Parsed r = parse_param(attrs);
    const int levels = r.p.num_levels;
    const unsigned int a = static_cast<unsigned int>(r.p.num_anchors);
    const auto& first = in->at(0);
    if (first.size() != 4 || first[1] % a != 0 || first[1] == 0) {
      MX_ERROR_MSG << kOpName << ": cls_prob_0 must be (B, A * C, H, W) with A = len(ratios) * "
                   << "len(scales) = " << a << ", got " << shape_str(first);
      return MX_FAIL;
    }
    const unsigned int batch = first[0], channels = first[1];
    for (int l = 0; l < levels; ++l) {
      const auto& cls = in->at(l);
      const auto& box = in->at(levels + l);
      if (cls.size() != 4 || cls[0] != batch || cls[1] != channels) {
        MX_ERROR_MSG << kOpName << ": cls_prob_" << l << " must be (B, A * C, H, W) = ("
                     << batch << ", " << channels << ", H, W) like cls_prob_0, got "
                     << shape_str(cls);
        return MX_FAIL;
      }
      if (box.size() != 4 || box[0] != batch || box[1] != 4 * a || box[2] != cls[2] ||
          box[3] != cls[3]) {
        MX_ERROR_MSG << kOpName << ": bbox_delta_" << l << " must be (B, 4A, H, W) = (" << batch
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
    out->at(0) = {batch, static_cast<unsigned int>(r.p.max_det), 6u};
    return MX_SUCCESS;
  })
}

struct Cand {
  float box[4];
  float score;
  int cls;
};

struct Dims {
  int batch, num_classes;
  std::vector<int> hs, ws;
};

Dims read_dims(const std::vector<MXTensor>& in, const RetinaPostParam& p) {
  Dims d;
  d.batch = static_cast<int>(in[0].shape[0]);
  d.num_classes = static_cast<int>(in[0].shape[1] / p.num_anchors);
  for (int l = 0; l < p.num_levels; ++l) {
    d.hs.push_back(static_cast<int>(in[l].shape[2]));
    d.ws.push_back(static_cast<int>(in[l].shape[3]));
  }
  return d;
}

// Per image: merge the levels' candidates (level 0 first, each best first), sort stably by
// score, greedy NMS per class, write the first max_det survivors to dst (max_det, 6).
void image_dets(const RetinaPostParam& p, const std::vector<Cand>* levels, float* dst) {
  std::vector<Cand> all;
  for (int l = 0; l < p.num_levels; ++l) all.insert(all.end(), levels[l].begin(), levels[l].end());
  std::stable_sort(all.begin(), all.end(),
                   [](const Cand& x, const Cand& y) { return x.score > y.score; });
  const int n = static_cast<int>(all.size());
  // Positions grouped by class, each group in rank order.
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&all](int i, int j) { return all[i].cls < all[j].cls; });
  std::vector<char> kept(n, 0), suppressed(n, 0);
  for (int g0 = 0; g0 < n;) {
    int g1 = g0;
    while (g1 < n && all[order[g1]].cls == all[order[g0]].cls) ++g1;
    int num_kept = 0;
    for (int i = g0; i < g1 && num_kept < p.max_det; ++i) {
      if (suppressed[order[i]]) continue;
      const float* bi = all[order[i]].box;
      kept[order[i]] = 1;
      ++num_kept;
      for (int j = i + 1; j < g1; ++j)
        if (!suppressed[order[j]] && pp_iou(bi, all[order[j]].box) > p.nms_threshold)
          suppressed[order[j]] = 1;
    }
    g0 = g1;
  }
  int row = 0;
  for (int i = 0; i < n && row < p.max_det; ++i) {
    if (!kept[i]) continue;
    float* out = dst + static_cast<int64_t>(row) * 6;
    std::copy_n(all[i].box, 4, out);
    out[4] = all[i].score;
    out[5] = static_cast<float>(all[i].cls);
    ++row;
  }
  std::fill(dst + static_cast<int64_t>(row) * 6, dst + static_cast<int64_t>(p.max_det) * 6, -1.f);
}

constexpr int64_t kScanChunk = int64_t{1} << 18;  // scores per scan job

void forward_cpu(const Parsed& r, const Dims& d, const std::vector<const float*>& cls,
                 const std::vector<const float*>& bbox, const float* im_info, float* dets) {
  const RetinaPostParam& p = r.p;
  const int levels = p.num_levels, segments = d.batch * levels;
  const size_t k = static_cast<size_t>(p.pre_nms_top_n);
  auto seg_size = [&](int s) {
    const int l = s % levels;
    return static_cast<int64_t>(p.num_anchors) * d.num_classes * d.hs[l] * d.ws[l];
  };
  auto seg_scores = [&](int s) { return cls[s % levels] + (s / levels) * seg_size(s); };
  // 1. Scan: every chunk keeps its own best k offsets (a superset of its share of the top k).
  struct Job {
    int seg;
    int64_t begin, end;
  };
  std::vector<Job> jobs;
  for (int s = 0; s < segments; ++s)
    for (int64_t o = 0; o < seg_size(s); o += kScanChunk)
      jobs.push_back({s, o, std::min(seg_size(s), o + kScanChunk)});
  std::vector<std::vector<int64_t>> found(jobs.size());
  const float thresh = p.score_thresh;
  parallel_for(static_cast<int64_t>(jobs.size()), [&](int64_t j) {
    const Job& job = jobs[j];
    const float* s = seg_scores(job.seg);
    std::vector<int64_t>& idx = found[j];
    for (int64_t o = job.begin; o < job.end; ++o)
      if (s[o] > thresh) idx.push_back(o);
    if (idx.size() > k) {
      std::nth_element(idx.begin(), idx.begin() + k, idx.end(), [s](int64_t a, int64_t b) {
        return s[a] > s[b] || (s[a] == s[b] && a < b);
      });
      idx.resize(k);
    }
  });
  // 2. Per (image, level): the best k of the chunks' survivors, decoded.
  std::vector<std::vector<Cand>> cands(segments);
  std::vector<size_t> first_job(segments + 1, jobs.size());
  for (size_t j = jobs.size(); j-- > 0;) first_job[jobs[j].seg] = j;
  for (int s = segments - 1; s >= 0; --s) first_job[s] = std::min(first_job[s], first_job[s + 1]);
  parallel_for(segments, [&](int64_t s) {
    const float* sc = seg_scores(static_cast<int>(s));
    std::vector<int64_t> idx;
    for (size_t j = first_job[s]; j < first_job[s + 1]; ++j)
      idx.insert(idx.end(), found[j].begin(), found[j].end());
    auto better = [sc](int64_t a, int64_t b) {
      return sc[a] > sc[b] || (sc[a] == sc[b] && a < b);
    };
    if (idx.size() > k) {
      std::nth_element(idx.begin(), idx.begin() + k, idx.end(), better);
      idx.resize(k);
    }
    std::sort(idx.begin(), idx.end(), better);
    const int b = static_cast<int>(s / levels), l = static_cast<int>(s % levels);
    const int64_t plane = static_cast<int64_t>(d.hs[l]) * d.ws[l];
    const float* deltas = bbox[l] + b * 4 * static_cast<int64_t>(p.num_anchors) * plane;
    const float* base = r.base_anchors.data() + static_cast<int64_t>(l) * p.num_anchors * 4;
    cands[s].resize(idx.size());
    for (size_t j = 0; j < idx.size(); ++j) {
      Cand& c = cands[s][j];
      c.cls = rp_decode(p, p.strides[l], base, deltas, d.hs[l], d.ws[l], d.num_classes, idx[j],
                        im_info[b * 3], im_info[b * 3 + 1], c.box);
      c.score = sc[idx[j]];
    }
  });
  // 3. Per image: class-aware NMS over all levels.
  parallel_for(d.batch, [&](int64_t b) {
    image_dets(p, &cands[b * levels], dets + b * static_cast<int64_t>(p.max_det) * 6);
  });
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource&) {
  SIMPLEDET_TRY(kOpName, {
    const Parsed r = parse_param(attrs);
    const int levels = r.p.num_levels;
    const Dims d = read_dims(*in, r.p);
    std::vector<const float*> cls, bbox;
    for (int l = 0; l < levels; ++l) {
      cls.push_back(in->at(l).data<float>());
      bbox.push_back(in->at(levels + l).data<float>());
    }
    forward_cpu(r, d, cls, bbox, in->at(2 * levels).data<float>(), out->at(0).data<float>());
    return MX_SUCCESS;
  })
}

#ifdef SIMPLEDET_WITH_CUDA
MXReturnValue forward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                          std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    const Parsed r = parse_param(attrs);
    const RetinaPostParam& p = r.p;
    const int levels = p.num_levels;
    const Dims d = read_dims(*in, p);
    std::vector<const float*> cls, bbox;
    for (int l = 0; l < levels; ++l) {
      cls.push_back(in->at(l).data<float>());
      bbox.push_back(in->at(levels + l).data<float>());
    }
    const size_t bytes = retina_postprocess_gpu_workspace(p, d.batch, d.num_classes,
                                                          d.hs.data(), d.ws.data());
    if (bytes > static_cast<size_t>(INT_MAX))
      throw std::runtime_error("needs " + std::to_string(bytes) + " bytes of GPU workspace, "
                               "more than MXNet's allocator hands out (2 GiB); use smaller "
                               "feature maps or fewer classes per op call");
    void* ws = res.alloc_gpu(static_cast<int>(bytes));
    if (ws == nullptr) throw std::runtime_error("could not allocate the GPU workspace");
    const int segments = d.batch * levels;
    const int64_t k = p.pre_nms_top_n;
    std::vector<float> host(static_cast<size_t>(segments) * k * kRPCandStride);
    std::vector<int> counts(segments, 0);
    void* stream = res.get_cuda_stream();
    retina_postprocess_candidates_gpu(p, d.batch, d.num_classes, d.hs.data(), d.ws.data(),
                                      cls.data(), bbox.data(), in->at(2 * levels).data<float>(),
                                      r.base_anchors.data(), host.data(), counts.data(), ws,
                                      bytes, stream);
    std::vector<std::vector<Cand>> cands(segments);
    for (int s = 0; s < segments; ++s) {
      cands[s].resize(counts[s]);
      for (int j = 0; j < counts[s]; ++j) {
        const float* e = host.data() + (s * k + j) * kRPCandStride;
        Cand& c = cands[s][j];
        std::copy_n(e, 4, c.box);
        c.score = e[4];
        c.cls = static_cast<int>(e[5]);
      }
    }
    std::vector<float> dets(static_cast<size_t>(d.batch) * p.max_det * 6);
    parallel_for(d.batch, [&](int64_t b) {
      image_dets(p, &cands[b * levels], dets.data() + b * static_cast<int64_t>(p.max_det) * 6);
    });
    cuda::copy_to_device_sync(out->at(0).data<float>(), dets.data(), dets.size() * sizeof(float),
                              stream);
    return MX_SUCCESS;
  })
}
#endif

}  // namespace
}  // namespace simpledet

SIMPLEDET_REGISTER_NO_GRAD_OP(_contrib_RetinaPostprocess, simpledet);
