// Detection post-processing, CPU implementation and registration as
// _contrib_DetectionPostprocess.
//
// Inputs (float32):
//   rois      (B * R, 5) [batch_idx, x1, y1, x2, y2]: B contiguous blocks of R rows, block b
//             belonging to image b (the batch_idx column is not read);
//   cls_prob  (B * R, C) softmax probabilities, column 0 = background;
//   bbox_pred (B * R, 4 * C) class-specific normalized deltas (columns 4c..4c+3 for class c),
//             or (B * R, 4) when class_agnostic;
//   im_info   (B, 3) [height, width, scale].
// Output: dets (B, max_det, 6) [x1, y1, x2, y2, score, class], class in 1..C-1, sorted by
// descending score (ties: lower class, then lower roi index first); unused rows are all -1.
// The registered backward writes zero gradients.
//
// CPU: parallel over (image, class) for decode + threshold + NMS, then a per-image merge.
// GPU: decode/threshold kernel on the device, then NMS and merge in a host pass over the
// copied candidates (same code as the CPU path), and the dets are copied back.
#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "detection_postprocess.h"
#include "simpledet_op.h"

namespace simpledet {
namespace {

const char* kOpName = "DetectionPostprocess";

DetPostParam parse_param(const Attrs& attrs) {
  DetPostParam p;
  std::vector<double> means = attr_list(attrs, "bbox_means", {0., 0., 0., 0.});
  std::vector<double> stds = attr_list(attrs, "bbox_stds", {0.1, 0.1, 0.2, 0.2});
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
  int64_t max_det = attr_int(attrs, "max_det", 100);
  if (max_det < 1 || max_det > INT_MAX)
    throw AttrError("max_det must be a positive integer, got " + std::to_string(max_det));
  p.max_det = static_cast<int>(max_det);
  p.class_agnostic = attr_bool(attrs, "class_agnostic", false);
  return p;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  SIMPLEDET_TRY(kOpName, {
    parse_param(attrs);
    *num_in = 4;
    *num_out = 1;
    return MX_SUCCESS;
  })
}

const char* kInputNames[4] = {"rois", "cls_prob", "bbox_pred", "im_info"};

MXReturnValue infer_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  for (size_t i = 0; i < in->size(); ++i) {
    if (in->at(i) != kFloat32) {
      MX_ERROR_MSG << kOpName << ": " << kInputNames[i] << " must be float32, got "
                   << dtype_name(in->at(i)) << " (cast the box-head outputs to float32)";
      return MX_FAIL;
    }
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  SIMPLEDET_TRY(kOpName, {
    DetPostParam p = parse_param(attrs);
    const auto& rois = in->at(0);
    const auto& cls = in->at(1);
    const auto& bbox = in->at(2);
    const auto& info = in->at(3);
    if (rois.size() != 2 || rois[1] != 5) {
      MX_ERROR_MSG << kOpName << ": rois must be (B * R, 5) [batch_idx, x1, y1, x2, y2], got "
                   << shape_str(rois);
      return MX_FAIL;
    }
    if (info.size() != 2 || info[1] != 3 || info[0] < 1) {
      MX_ERROR_MSG << kOpName << ": im_info must be (B, 3) [height, width, scale] with B >= 1, "
                   << "got " << shape_str(info);
      return MX_FAIL;
    }
    if (rois[0] % info[0] != 0) {
      MX_ERROR_MSG << kOpName << ": rois has " << rois[0] << " rows, not a multiple of the "
                   << "batch size " << info[0] << " (im_info rows); rois must be B blocks of R";
      return MX_FAIL;
    }
    if (cls.size() != 2 || cls[0] != rois[0] || cls[1] < 2) {
      MX_ERROR_MSG << kOpName << ": cls_prob must be (B * R, C) with B * R = " << rois[0]
                   << " (rows of rois) and C >= 2 (background + classes), got "
                   << shape_str(cls);
      return MX_FAIL;
    }
    unsigned int want = p.class_agnostic ? 4u : 4u * cls[1];
    if (bbox.size() != 2 || bbox[0] != rois[0] || bbox[1] != want) {
      MX_ERROR_MSG << kOpName << ": bbox_pred must be (" << rois[0] << ", " << want << ") ("
                   << (p.class_agnostic ? "class_agnostic: 4 deltas per roi"
                                        : "4 deltas per class, C = cls_prob.shape[1]")
                   << "), got " << shape_str(bbox);
      return MX_FAIL;
    }
    out->at(0) = {info[0], static_cast<unsigned int>(p.max_det), 6u};
    return MX_SUCCESS;
  })
}

struct Det {
  float box[4];
  float score;
  int cls;
};

// NMS of one (image, class) job over candidates in roi order (boxes: n x 4, scores: n);
// keeps at most max_det (the merge cannot use more from one class).
void nms_job(const std::vector<float>& boxes, const std::vector<float>& scores, int cls,
             const DetPostParam& p, std::vector<Det>* kept) {
  int64_t n = static_cast<int64_t>(scores.size());
  std::vector<int64_t> order = argsort_desc(scores.data(), n);
  std::vector<int64_t> keep = nms_sorted(boxes.data(), 4, order, p.nms_threshold, p.max_det);
  kept->clear();
  kept->reserve(keep.size());
  for (int64_t k : keep) {
    Det d;
    std::copy_n(boxes.data() + k * 4, 4, d.box);
    d.score = scores[k];
    d.cls = cls;
    kept->push_back(d);
  }
}

// Merges the per-class results of each image (jobs b * (C - 1) .. (b + 1) * (C - 1) - 1, in
// class order), sorts stably by score and writes dets (B, max_det, 6), padding with -1.
void merge_write(const std::vector<std::vector<Det>>& kept, int batch, int num_fg,
                 const DetPostParam& p, float* dets) {
  parallel_for(batch, [&](int64_t b) {
    std::vector<Det> all;
    for (int c = 0; c < num_fg; ++c) {
      const auto& k = kept[b * num_fg + c];
      all.insert(all.end(), k.begin(), k.end());
    }
    std::stable_sort(all.begin(), all.end(),
                     [](const Det& x, const Det& y) { return x.score > y.score; });
    float* dst = dets + b * static_cast<int64_t>(p.max_det) * 6;
    int64_t n = std::min<int64_t>(all.size(), p.max_det);
    for (int64_t i = 0; i < n; ++i) {
      std::copy_n(all[i].box, 4, dst + i * 6);
      dst[i * 6 + 4] = all[i].score;
      dst[i * 6 + 5] = static_cast<float>(all[i].cls);
    }
    std::fill(dst + n * 6, dst + static_cast<int64_t>(p.max_det) * 6, -1.f);
  });
}

struct Dims {
  int batch, num_classes;
  int64_t rois_per_image;
};

Dims read_dims(const std::vector<MXTensor>& in) {
  Dims d;
  d.batch = static_cast<int>(in[3].shape[0]);
  d.num_classes = static_cast<int>(in[1].shape[1]);
  d.rois_per_image = in[0].shape[0] / d.batch;
  return d;
}

void forward_cpu_impl(const float* rois, const float* cls_prob, const float* bbox_pred,
                      const float* im_info, const Dims& d, const DetPostParam& p, float* dets) {
  const int num_fg = d.num_classes - 1;
  std::vector<std::vector<Det>> kept(static_cast<size_t>(d.batch) * num_fg);
  parallel_for(static_cast<int64_t>(d.batch) * num_fg, [&](int64_t job) {
    int64_t b = job / num_fg;
    int c = static_cast<int>(job % num_fg) + 1;
    float im_h = im_info[b * 3], im_w = im_info[b * 3 + 1];
    std::vector<float> boxes, scores;
    for (int64_t r = 0; r < d.rois_per_image; ++r) {
      int64_t row = b * d.rois_per_image + r;
      float s = cls_prob[row * d.num_classes + c];
      if (!(s > p.score_thresh)) continue;
      float box[4];
      det_decode_box(rois, bbox_pred, row, c, d.num_classes, im_h, im_w, p, box);
      boxes.insert(boxes.end(), box, box + 4);
      scores.push_back(s);
    }
    nms_job(boxes, scores, c, p, &kept[job]);
  });
  merge_write(kept, d.batch, num_fg, p, dets);
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource&) {
  SIMPLEDET_TRY(kOpName, {
    DetPostParam p = parse_param(attrs);
    Dims d = read_dims(*in);
    forward_cpu_impl(in->at(0).data<float>(), in->at(1).data<float>(), in->at(2).data<float>(),
                     in->at(3).data<float>(), d, p, out->at(0).data<float>());
    return MX_SUCCESS;
  })
}

#ifdef SIMPLEDET_WITH_CUDA
// Device decode/threshold, then NMS + merge on the host over the copied candidates.
MXReturnValue forward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                          std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    DetPostParam p = parse_param(attrs);
    Dims d = read_dims(*in);
    void* stream = res.get_cuda_stream();
    const int num_fg = d.num_classes - 1;
    const int64_t num_cand = d.batch * d.rois_per_image * num_fg;
    const int64_t cand_bytes = num_cand * kDetCandStride * static_cast<int64_t>(sizeof(float));
    if (cand_bytes > INT_MAX)
      throw std::runtime_error("too many (roi, class) candidates for the GPU buffer: " +
                               std::to_string(num_cand));
    std::vector<float> cand(num_cand * kDetCandStride);
    if (num_cand > 0) {
      float* dev = static_cast<float*>(res.alloc_gpu(static_cast<int>(cand_bytes)));
      if (dev == nullptr) throw std::runtime_error("could not allocate the GPU candidate buffer");
      detection_postprocess_decode_gpu(in->at(0).data<float>(), in->at(1).data<float>(),
                                       in->at(2).data<float>(), in->at(3).data<float>(),
                                       d.batch, d.rois_per_image, d.num_classes, p, dev, stream);
      cuda::copy_to_host_sync(cand.data(), dev, cand_bytes, stream);
    }
    std::string err = cuda::last_error();
    if (!err.empty()) throw std::runtime_error("CUDA error: " + err);
    std::vector<std::vector<Det>> kept(static_cast<size_t>(d.batch) * num_fg);
    parallel_for(static_cast<int64_t>(d.batch) * num_fg, [&](int64_t job) {
      int64_t b = job / num_fg;
      int c = static_cast<int>(job % num_fg) + 1;
      std::vector<float> boxes, scores;
      for (int64_t r = 0; r < d.rois_per_image; ++r) {
        const float* e = cand.data() +
                         ((b * d.rois_per_image + r) * num_fg + c - 1) * kDetCandStride;
        if (e[5] == 0.f) continue;
        boxes.insert(boxes.end(), e, e + 4);
        scores.push_back(e[4]);
      }
      nms_job(boxes, scores, c, p, &kept[job]);
    });
    std::vector<float> dets(static_cast<size_t>(d.batch) * p.max_det * 6);
    merge_write(kept, d.batch, num_fg, p, dets.data());
    cuda::copy_to_device_sync(out->at(0).data<float>(), dets.data(), dets.size() * sizeof(float),
                              stream);
    return MX_SUCCESS;
  })
}
#endif

}  // namespace
}  // namespace simpledet

SIMPLEDET_REGISTER_NO_GRAD_OP(_contrib_DetectionPostprocess, simpledet);
