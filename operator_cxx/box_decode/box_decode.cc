// Box decoding between Cascade R-CNN stages, CPU implementation and registration as
// _contrib_BoxDecode (not MXNet's own contrib.box_decode: that one takes (B, N, 4) anchors
// without a batch index, uses width x2 - x1 and does not clip to each image).
//
// Inputs (float32):
//   rois    (N, 5) [batch_idx, x1, y1, x2, y2] "+1" boxes, e.g. a stage's sampled rois;
//   deltas  (N, 4) class-agnostic normalized deltas (dx, dy, dw, dh) of those rois;
//   im_info (B, 3) [height, width, scale] of each image.
// Attributes: bbox_means, bbox_stds (4 numbers each; deltas are de-normalized as
// d * stds + means).
// Output: (N, 5) [batch_idx, x1, y1, x2, y2], each roi decoded (box_decode: dw/dh clipped at
// log(1000/16)) and clipped to image batch_idx; rows whose batch index is not an integer in
// [0, B) are copied unchanged. The registered backward writes zero gradients.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "box_decode.h"
#include "simpledet_op.h"

namespace simpledet {
namespace {

const char* kOpName = "BoxDecode";

BoxDecodeParam parse_param(const Attrs& attrs) {
  BoxDecodeParam p;
  std::vector<double> means = attr_list(attrs, "bbox_means", {0., 0., 0., 0.});
  std::vector<double> stds = attr_list(attrs, "bbox_stds", {0.1, 0.1, 0.2, 0.2});
  if (means.size() != 4) throw AttrError("bbox_means must have 4 entries (dx, dy, dw, dh)");
  if (stds.size() != 4) throw AttrError("bbox_stds must have 4 entries (dx, dy, dw, dh)");
  for (int i = 0; i < 4; ++i) {
    if (!std::isfinite(means[i]) || !std::isfinite(stds[i]))
      throw AttrError("bbox_means and bbox_stds must be finite");
    p.means[i] = static_cast<float>(means[i]);
    p.stds[i] = static_cast<float>(stds[i]);
  }
  return p;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  SIMPLEDET_TRY(kOpName, {
    parse_param(attrs);
    *num_in = 3;
    *num_out = 1;
    return MX_SUCCESS;
  })
}

const char* kInputNames[3] = {"rois", "deltas", "im_info"};

MXReturnValue infer_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  for (size_t i = 0; i < in->size(); ++i) {
    if (in->at(i) != kFloat32) {
      MX_ERROR_MSG << kOpName << ": " << kInputNames[i] << " must be float32, got "
                   << dtype_name(in->at(i)) << " (cast the box-head deltas to float32)";
      return MX_FAIL;
    }
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  SIMPLEDET_TRY(kOpName, {
    parse_param(attrs);
    const auto& rois = in->at(0);
    const auto& deltas = in->at(1);
    const auto& info = in->at(2);
    if (rois.size() != 2 || rois[1] != 5) {
      MX_ERROR_MSG << kOpName << ": rois must be (N, 5) [batch_idx, x1, y1, x2, y2], got "
                   << shape_str(rois);
      return MX_FAIL;
    }
    if (deltas.size() != 2 || deltas[0] != rois[0] || deltas[1] != 4) {
      MX_ERROR_MSG << kOpName << ": deltas must be (" << rois[0] << ", 4) (one class-agnostic "
                   << "(dx, dy, dw, dh) per roi), got " << shape_str(deltas);
      return MX_FAIL;
    }
    if (info.size() != 2 || info[1] != 3 || info[0] < 1) {
      MX_ERROR_MSG << kOpName << ": im_info must be (B, 3) [height, width, scale] with B >= 1, "
                   << "got " << shape_str(info);
      return MX_FAIL;
    }
    out->at(0) = rois;
    return MX_SUCCESS;
  })
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource&) {
  SIMPLEDET_TRY(kOpName, {
    const BoxDecodeParam p = parse_param(attrs);
    const float* rois = in->at(0).data<float>();
    const float* deltas = in->at(1).data<float>();
    const float* im_info = in->at(2).data<float>();
    const int batch = static_cast<int>(in->at(2).shape[0]);
    const int64_t num_rois = in->at(0).shape[0];
    float* result = out->at(0).data<float>();
    // Chunks of rows: one row is a few dozen flops, too little for a task of its own.
    constexpr int64_t kChunk = 1024;
    parallel_for((num_rois + kChunk - 1) / kChunk, [&](int64_t chunk) {
      const int64_t end = std::min(num_rois, (chunk + 1) * kChunk);
      for (int64_t row = chunk * kChunk; row < end; ++row)
        box_decode_row(rois, deltas, im_info, batch, row, p, result);
    });
    return MX_SUCCESS;
  })
}

#ifdef SIMPLEDET_WITH_CUDA
MXReturnValue forward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                          std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    const BoxDecodeParam p = parse_param(attrs);
    box_decode_gpu(in->at(0).data<float>(), in->at(1).data<float>(), in->at(2).data<float>(),
                   static_cast<int>(in->at(2).shape[0]), in->at(0).shape[0], p,
                   out->at(0).data<float>(), res.get_cuda_stream());
    std::string err = cuda::last_error();
    if (!err.empty()) throw std::runtime_error("CUDA error: " + err);
    return MX_SUCCESS;
  })
}
#endif

}  // namespace
}  // namespace simpledet

SIMPLEDET_REGISTER_NO_GRAD_OP(_contrib_BoxDecode, simpledet);
