// Shared helpers for simpledet's operators: attribute parsing, shape/dtype checks, and a
// parallel-for over OpenMP (MXNet links the same libgomp, so the runtimes agree).
#ifndef SIMPLEDET_OP_H_
#define SIMPLEDET_OP_H_

#include <mxnet/lib_api.h>

#include "cuda_utils.h"

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

using namespace mxnet::ext;  // NOLINT: lib_api's types are used everywhere in op code

namespace simpledet {

using Attrs = std::unordered_map<std::string, std::string>;

// Raised while parsing attributes; registration code turns it into MX_ERROR_MSG + MX_FAIL.
struct AttrError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline const std::string* find_attr(const Attrs& attrs, const std::string& key) {
  auto it = attrs.find(key);
  return it == attrs.end() ? nullptr : &it->second;
}

inline double attr_double(const Attrs& attrs, const std::string& key, double fallback) {
  const std::string* s = find_attr(attrs, key);
  if (!s) return fallback;
  try {
    size_t used = 0;
    double v = std::stod(*s, &used);
    return v;
  } catch (const std::exception&) {
    throw AttrError("attribute '" + key + "' must be a number, got '" + *s + "'");
  }
}

inline int64_t attr_int(const Attrs& attrs, const std::string& key, int64_t fallback) {
  const std::string* s = find_attr(attrs, key);
  if (!s) return fallback;
  try {
    return std::stoll(*s);
  } catch (const std::exception&) {
    throw AttrError("attribute '" + key + "' must be an integer, got '" + *s + "'");
  }
}

inline bool attr_bool(const Attrs& attrs, const std::string& key, bool fallback) {
  const std::string* s = find_attr(attrs, key);
  if (!s) return fallback;
  if (*s == "1" || *s == "True" || *s == "true") return true;
  if (*s == "0" || *s == "False" || *s == "false") return false;
  throw AttrError("attribute '" + key + "' must be a boolean, got '" + *s + "'");
}

// Parses "(1, 2.5, 3)", "[1,2]" or "1" into numbers.
inline std::vector<double> attr_list(const Attrs& attrs, const std::string& key,
                                     const std::vector<double>& fallback) {
  const std::string* s = find_attr(attrs, key);
  if (!s) return fallback;
  std::string body;
  for (char c : *s) body += (c == '(' || c == ')' || c == '[' || c == ']' || c == ',') ? ' ' : c;
  std::istringstream in(body);
  std::vector<double> out;
  std::string tok;
  while (in >> tok) {
    try {
      out.push_back(std::stod(tok));
    } catch (const std::exception&) {
      throw AttrError("attribute '" + key + "' must be a list of numbers, got '" + *s + "'");
    }
  }
  return out;
}

// Runs body(i) for i in [0, n) on OpenMP threads; exceptions must not escape body.
template <typename F>
inline void parallel_for(int64_t n, F body) {
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
  for (int64_t i = 0; i < n; ++i) body(i);
}

inline std::string shape_str(const std::vector<unsigned int>& s) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << (s.size() == 1 ? ",)" : ")");
  return out.str();
}

inline const char* dtype_name(int t) {
  switch (t) {
    case kFloat32: return "float32";
    case kFloat64: return "float64";
    case kFloat16: return "float16";
    case kUint8: return "uint8";
    case kInt32: return "int32";
    case kInt8: return "int8";
    case kInt64: return "int64";
    default: return "unknown";
  }
}

inline size_t dtype_size(int t) {
  switch (t) {
    case kFloat64: case kInt64: return 8;
    case kFloat16: return 2;
    case kUint8: case kInt8: return 1;
    default: return 4;
  }
}

// Backward for ops whose outputs carry no gradient to their inputs (proposals, sampling,
// post-processing): MXNet needs a registered backward to bind training graphs. Every output
// of the backward call is an input gradient; all are zeroed.
inline MXReturnValue zero_backward_cpu(const Attrs&, std::vector<MXTensor>*,
                                       std::vector<MXTensor>* outputs, const OpResource&) {
  for (auto& t : *outputs)
    std::fill_n(static_cast<char*>(t.data_ptr), t.size() * dtype_size(t.dtype), 0);
  return MX_SUCCESS;
}

#ifdef SIMPLEDET_WITH_CUDA
inline MXReturnValue zero_backward_gpu(const Attrs&, std::vector<MXTensor>*,
                                       std::vector<MXTensor>* outputs, const OpResource& res) {
  for (auto& t : *outputs)
    cuda::zero_async(t.data_ptr, t.size() * dtype_size(t.dtype), res.get_cuda_stream());
  return MX_SUCCESS;
}
#endif

}  // namespace simpledet

// Wraps a body that may throw AttrError/std::exception into MXNet's error protocol.
#define SIMPLEDET_TRY(op_name, ...)                   \
  try {                                               \
    __VA_ARGS__                                       \
  } catch (const std::exception& err) {               \
    MX_ERROR_MSG << op_name << ": " << err.what();    \
    return MX_FAIL;                                   \
  }

// Registers an op whose inputs get no gradient (a zero backward: MXNet cannot bind a training
// graph without one). The enclosing namespace `ns` must define parse_attrs, infer_type,
// infer_shape, forward and, in CUDA builds, forward_gpu.
#ifdef SIMPLEDET_WITH_CUDA
#define SIMPLEDET_NO_GRAD_GPU(ns)                                                      \
  .setForward(ns::forward_gpu, "gpu").setBackward(simpledet::zero_backward_gpu, "gpu")
#else
#define SIMPLEDET_NO_GRAD_GPU(ns)
#endif
#define SIMPLEDET_REGISTER_NO_GRAD_OP(op, ns)                                          \
  REGISTER_OP(op)                                                                      \
      .setParseAttrs(ns::parse_attrs)                                                  \
      .setInferType(ns::infer_type)                                                    \
      .setInferShape(ns::infer_shape)                                                  \
      .setForward(ns::forward, "cpu")                                                  \
      .setBackward(simpledet::zero_backward_cpu, "cpu")                                \
      SIMPLEDET_NO_GRAD_GPU(ns)

#endif  // SIMPLEDET_OP_H_
