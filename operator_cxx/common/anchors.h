// Anchor generation shared by the ops that make anchors from (stride, scales, ratios):
// simpledet.core.anchors.base_anchors, in double precision, rounded to float at the end.
#ifndef SIMPLEDET_ANCHORS_H_
#define SIMPLEDET_ANCHORS_H_

#include <cmath>
#include <vector>

namespace simpledet {

// Appends the A = len(ratios) * len(scales) base anchors of a level (the location at (0, 0)),
// 4 floats [x1, y1, x2, y2] each, ratio-major: anchor a is ratio a / len(scales), scale
// a % len(scales). The anchor at feature location (y, x) is base + stride * (x, y, x, y).
inline void append_base_anchors(double stride, const std::vector<double>& scales,
                                const std::vector<double>& ratios, std::vector<float>* out) {
  double size = stride * stride, ctr = 0.5 * (stride - 1.0);
  for (double ratio : ratios) {
    double base_w = std::floor(std::sqrt(std::floor(size / ratio)) + 0.5);
    double base_h = std::floor(base_w * ratio + 0.5);
    for (double scale : scales) {
      double w = base_w * scale, h = base_h * scale;
      out->push_back(static_cast<float>(ctr - 0.5 * (w - 1)));
      out->push_back(static_cast<float>(ctr - 0.5 * (h - 1)));
      out->push_back(static_cast<float>(ctr + 0.5 * (w - 1)));
      out->push_back(static_cast<float>(ctr + 0.5 * (h - 1)));
    }
  }
}

}  // namespace simpledet

#endif  // SIMPLEDET_ANCHORS_H_
