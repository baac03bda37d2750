// Mask R-CNN mask targets, CPU implementation and registration as _contrib_MaskTarget.
//
// Inputs: rois (N, 5) float32 [b, x1, y1, x2, y2] ("+1" boxes; column 0 is the image, read as an
// int); gt_index (N,) float32, the row of gt_polys[b] roi r is matched to, or < 0 for no target;
// gt_polys (B, G, L) float32 in the padded polygon layout of mask_target.h. Attribute mask_size
// M (default 28). Output mask_targets (N, M, M) float32: pixel (i, j) of roi r is 1 when the
// image point (x1 + (j + 0.5) * w / M, y1 + (i + 0.5) * h / M), w = max(x2 - x1 + 1, 1) (h
// alike), lies inside the union of the gt's polygons (each by the even-odd rule), else 0. Rows
// with gt_index < 0 or whose gt row has P <= 0 are all -1 (ignored by the loss). No gradient.
//
// MXNet 1.x extension ops cannot take zero-size inputs: N, G and L must be >= 1, so a batch
// without foreground keeps its N rows with every gt_index = -1 (all -1 targets), and an image
// without gt keeps G >= 1 padding rows of -1.
//
// The CPU path rasterises each roi by scanlines (rasterise_roi): per polygon and sample row, the
// crossings x of its edges with y = py (edge_crossing) are sorted, and pixel j is inside when an
// odd number of them exceed px_j. That counts exactly the edges row_contains() counts for
// (px_j, py), so it agrees bit for bit with the CUDA kernel's per-pixel test.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mask_target.h"
#include "simpledet_op.h"

namespace simpledet {
namespace {

const char* kOpName = "MaskTarget";
constexpr int64_t kMaxMaskSize = 1024;

int parse_mask_size(const Attrs& attrs) {
  int64_t m = attr_int(attrs, "mask_size", 28);
  if (m < 1 || m > kMaxMaskSize)
    throw AttrError("mask_size must be in [1, " + std::to_string(kMaxMaskSize) + "], got " +
                    std::to_string(m));
  return static_cast<int>(m);
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  SIMPLEDET_TRY(kOpName, {
    parse_mask_size(attrs);
    *num_in = 3;
    *num_out = 1;
    return MX_SUCCESS;
  })
}

MXReturnValue infer_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  const char* names[3] = {"rois", "gt_index", "gt_polys"};
  for (int i = 0; i < 3; ++i) {
    if (in->at(i) != kFloat32) {
      MX_ERROR_MSG << kOpName << ": " << names[i] << " must be float32, got "
                   << dtype_name(in->at(i));
      return MX_FAIL;
    }
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  SIMPLEDET_TRY(kOpName, {
    const unsigned int m = static_cast<unsigned int>(parse_mask_size(attrs));
    const char* names[3] = {"rois", "gt_index", "gt_polys"};
    // MXNet 1.x passes unknown dims (and zero-size ones: 0 means unknown there) as -1.
    const unsigned int unknown = static_cast<unsigned int>(-1);
    for (int i = 0; i < 3; ++i) {
      for (unsigned int dim : in->at(i)) {
        if (dim == unknown || dim == 0) {
          MX_ERROR_MSG << kOpName << ": " << names[i] << " has an unknown or zero-size "
                       << "dimension; MXNet 1.x extension ops need known, non-empty input shapes "
                       << "(keep the N roi rows with gt_index -1 when there is no foreground)";
          return MX_FAIL;
        }
      }
    }
    const auto& rois = in->at(0);
    const auto& index = in->at(1);
    const auto& polys = in->at(2);
    if (rois.size() != 2 || rois[1] != 5) {
      MX_ERROR_MSG << kOpName << ": rois must be (N, 5) [batch_idx, x1, y1, x2, y2], got "
                   << shape_str(rois);
      return MX_FAIL;
    }
    if (index.size() != 1 || index[0] != rois[0]) {
      MX_ERROR_MSG << kOpName << ": gt_index must be (N,) with N = " << rois[0]
                   << " (one entry per roi), got " << shape_str(index);
      return MX_FAIL;
    }
    if (polys.size() != 3) {
      MX_ERROR_MSG << kOpName << ": gt_polys must be (B, G, L) padded polygon rows, got "
                   << shape_str(polys);
      return MX_FAIL;
    }
    out->at(0) = {rois[0], m, m};
    return MX_SUCCESS;
  })
}

struct Dims {
  int64_t num_rois, row_len;
  int batch, num_gt, mask_size;
};

Dims read_dims(const Attrs& attrs, const std::vector<MXTensor>& in) {
  Dims d;
  d.num_rois = in[0].shape[0];
  d.batch = static_cast<int>(in[2].shape[0]);
  d.num_gt = static_cast<int>(in[2].shape[1]);
  d.row_len = in[2].shape[2];
  d.mask_size = parse_mask_size(attrs);
  return d;
}

std::string fmt(float v) {
  std::string s = std::to_string(v);
  if (s.find('.') != std::string::npos) {
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

// The one-line message for roi r, whose status is an error. row is its gt row (L floats) when
// the roi located one, else nullptr.
std::string describe_error(int64_t r, const float* roi, float gt_index, const Dims& d,
                           const float* row) {
  const std::string who = "roi " + std::to_string(r);
  int b = -1, j = -1;
  int status = locate_gt_row(roi, gt_index, d.batch, d.num_gt, &b, &j);
  if (status == kMaskBadGtIndex)
    return who + ": gt_index " + fmt(gt_index) + " is not a row of gt_polys (expected an "
           "integer in [0, " + std::to_string(d.num_gt) + "), or < 0 for no target)";
  if (status == kMaskBadBatch)
    return who + ": batch index " + fmt(roi[0]) + " (rois[" + std::to_string(r) + ", 0]) is "
           "not an image of gt_polys (expected [0, " + std::to_string(d.batch) + "))";
  const std::string where = who + " (image " + std::to_string(b) + ", gt row " +
                            std::to_string(j) + ")";
  int bad = -1;
  status = row == nullptr ? kMaskOk : check_gt_row(row, d.row_len, &bad);
  const std::string poly = "polygon " + std::to_string(bad);
  switch (status) {
    case kMaskBadCount:
      return where + ": polygon count P = " + fmt(row[0]) + " is not an integer";
    case kMaskBadVertices: {
      int64_t o = 1;
      for (int k = 0; k < bad; ++k) o += 1 + 2 * static_cast<int64_t>(row[o]);
      return where + ": " + poly + " has n = " + fmt(row[o]) + " vertices (expected an "
             "integer >= 3)";
    }
    case kMaskOverrun:
      return where + ": " + (bad < 0 ? "P = " + fmt(row[0]) + " polygons run" : poly + " runs") +
             " past the row length L = " + std::to_string(d.row_len) +
             " (expected [P, n_1, x, y, ..., n_P, x, y, ...] within L floats)";
    default:
      return where + ": invalid input (status " + std::to_string(status) + ")";
  }
}

// Validates every roi; throws for the first bad one.
void check_inputs(const float* rois, const float* gt_index, const float* polys, const Dims& d) {
  for (int64_t r = 0; r < d.num_rois; ++r) {
    int b, j, bad;
    int status = locate_gt_row(rois + r * 5, gt_index[r], d.batch, d.num_gt, &b, &j);
    const float* row = nullptr;
    if (status == kMaskOk) {
      row = polys + (static_cast<int64_t>(b) * d.num_gt + j) * d.row_len;
      status = check_gt_row(row, d.row_len, &bad);
    }
    if (status >= kMaskBadBatch)
      throw std::runtime_error(describe_error(r, rois + r * 5, gt_index[r], d, row));
  }
}

struct Scratch {
  std::vector<float> px, py;                // sample columns / rows, non-decreasing
  std::vector<std::pair<int, float>> hits;  // (sample row, crossing x) of one polygon
};

// Scanline raster of one roi's checked gt row into out (M x M). Per polygon, each edge is
// crossed exactly by the sample rows with min(ay, by) <= py < max(ay, by) (edge_crossing's
// half-open rule), a contiguous run since py is non-decreasing: binary search finds it. The
// crossings are sorted per row, and pixel j of row i is set when an odd number of them exceed
// px_j: the count row_contains() makes for (px_j, py_i).
void rasterise_roi(const float* roi, const float* row, int M, float* out, Scratch* s) {
  const float w = roi_extent(roi[1], roi[3]), h = roi_extent(roi[2], roi[4]);
  s->px.resize(M);
  s->py.resize(M);
  for (int k = 0; k < M; ++k) {
    s->px[k] = roi_sample(roi[1], w, k, M);
    s->py[k] = roi_sample(roi[2], h, k, M);
  }
  std::fill_n(out, static_cast<int64_t>(M) * M, 0.f);
  const int P = static_cast<int>(row[0]);
  int64_t o = 1;
  for (int k = 0; k < P; ++k) {
    const int64_t n = static_cast<int64_t>(row[o]);
    const float* pts = row + o + 1;
    o += 1 + 2 * n;
    s->hits.clear();
    float ax = pts[2 * (n - 1)], ay = pts[2 * (n - 1) + 1];
    for (int64_t v = 0; v < n; ++v) {
      const float bx = pts[2 * v], by = pts[2 * v + 1];
      if (ay < by || by < ay) {  // not horizontal, no NaN end
        const auto first = std::lower_bound(s->py.begin(), s->py.end(), std::min(ay, by));
        const auto last = std::lower_bound(first, s->py.end(), std::max(ay, by));
        for (auto it = first; it != last; ++it) {
          float x;
          // A NaN crossing never satisfies px < x, so dropping it changes no count.
          if (edge_crossing(ax, ay, bx, by, *it, &x) && x == x)
            s->hits.emplace_back(static_cast<int>(it - s->py.begin()), x);
        }
      }
      ax = bx;
      ay = by;
    }
    std::sort(s->hits.begin(), s->hits.end());
    for (size_t a = 0; a < s->hits.size();) {
      const int i = s->hits[a].first;
      size_t b = a;
      while (b < s->hits.size() && s->hits[b].first == i) ++b;
      size_t below = a;  // crossings of row i with x <= px[j]; the rest satisfy px[j] < x
      for (int j = 0; j < M; ++j) {
        while (below < b && s->hits[below].second <= s->px[j]) ++below;
        if ((b - below) & 1) out[static_cast<int64_t>(i) * M + j] = 1.f;
      }
      a = b;
    }
  }
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource&) {
  SIMPLEDET_TRY(kOpName, {
    const Dims d = read_dims(attrs, *in);
    const float* rois = in->at(0).data<float>();
    const float* gt_index = in->at(1).data<float>();
    const float* polys = in->at(2).data<float>();
    float* targets = out->at(0).data<float>();
    check_inputs(rois, gt_index, polys, d);
    const int M = d.mask_size;
    const int64_t area = static_cast<int64_t>(M) * M;
    parallel_for(d.num_rois, [&](int64_t r) {
      float* dst = targets + r * area;
      int b, j, bad;
      int status = locate_gt_row(rois + r * 5, gt_index[r], d.batch, d.num_gt, &b, &j);
      const float* row = nullptr;
      if (status == kMaskOk) {
        row = polys + (static_cast<int64_t>(b) * d.num_gt + j) * d.row_len;
        status = check_gt_row(row, d.row_len, &bad);
      }
      if (status != kMaskOk) {
        std::fill_n(dst, area, -1.f);
        return;
      }
      thread_local Scratch scratch;
      rasterise_roi(rois + r * 5, row, M, dst, &scratch);
    });
    return MX_SUCCESS;
  })
}

#ifdef SIMPLEDET_WITH_CUDA
MXReturnValue forward_gpu(const Attrs& attrs, std::vector<MXTensor>* in,
                          std::vector<MXTensor>* out, const OpResource& res) {
  SIMPLEDET_TRY(kOpName, {
    const Dims d = read_dims(attrs, *in);
    void* stream = res.get_cuda_stream();
    if (d.num_rois * 4 > INT32_MAX) throw std::runtime_error("too many rois for temp space");
    int* status = static_cast<int*>(res.alloc_gpu(static_cast<int>(d.num_rois * 4)));
    mask_target_gpu(in->at(0).data<float>(), in->at(1).data<float>(), in->at(2).data<float>(),
                    d.num_rois, d.batch, d.num_gt, d.row_len, d.mask_size,
                    out->at(0).data<float>(), status, stream);
    std::vector<int> host_status(d.num_rois);
    cuda::copy_to_host_sync(host_status.data(), status, d.num_rois * 4, stream);
    std::string err = cuda::last_error();
    if (!err.empty()) throw std::runtime_error("CUDA error: " + err);
    for (int64_t r = 0; r < d.num_rois; ++r) {
      if (host_status[r] < kMaskBadBatch) continue;
      float roi[5], gt_index;
      cuda::copy_to_host_sync(roi, in->at(0).data<float>() + r * 5, sizeof(roi), stream);
      cuda::copy_to_host_sync(&gt_index, in->at(1).data<float>() + r, sizeof(float), stream);
      int b, j;
      std::vector<float> row;
      if (locate_gt_row(roi, gt_index, d.batch, d.num_gt, &b, &j) == kMaskOk) {
        row.resize(d.row_len);
        const float* src =
            in->at(2).data<float>() + (static_cast<int64_t>(b) * d.num_gt + j) * d.row_len;
        cuda::copy_to_host_sync(row.data(), src, d.row_len * sizeof(float), stream);
      }
      throw std::runtime_error(
          describe_error(r, roi, gt_index, d, row.empty() ? nullptr : row.data()));
    }
    return MX_SUCCESS;
  })
}
#endif

}  // namespace
}  // namespace simpledet

SIMPLEDET_REGISTER_NO_GRAD_OP(_contrib_MaskTarget, simpledet);
