// CPU kernels of the training-mode batch norm (contract and semantics: batch_norm_kernels.h).
#include "batch_norm_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_isa.h"

namespace {

namespace scalar {
#include "batch_norm_kernels_rows.inc"
}  // namespace scalar

#ifdef JSNET_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
#include "batch_norm_kernels_rows.inc"
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
#include "batch_norm_kernels_rows.inc"
}  // namespace avx512
#pragma GCC pop_options
#endif  // JSNET_X86_SIMD

constexpr int64_t kBlockRows = JSNET_BATCH_NORM_BLOCK_ROWS;

// gamma / sqrt(variance + epsilon) in double, rounded once to float32 (the CUDA kernels compute
// the same value: IEEE division and square root are correctly rounded on both).
std::vector<float> Scales(int c, const float* variance, const float* gamma, float epsilon) {
  std::vector<float> scale(c);
  for (int ch = 0; ch < c; ++ch) {
    scale[ch] = static_cast<float>(static_cast<double>(gamma[ch]) /
                                   std::sqrt(static_cast<double>(variance[ch]) + epsilon));
  }
  return scale;
}

// The rows [first, first + count) of block `block` of `rows` rows.
void BlockRows(int64_t block, int64_t rows, int64_t* first, int64_t* count) {
  *first = block * kBlockRows;
  *count = std::min(kBlockRows, rows - *first);
}

// Sums the blocks' (s1, s2) partials in block order into t1, t2 (C each).
void SumPartials(int64_t rows, int c, const double* partial, std::vector<double>* t1,
                 std::vector<double>* t2) {
  t1->assign(c, 0.0);
  t2->assign(c, 0.0);
  const int64_t blocks = JSNET_BATCH_NORM_BLOCKS(rows);
  for (int64_t b = 0; b < blocks; ++b) {
    const double* s1 = partial + b * 2 * c;
    const double* s2 = s1 + c;
    for (int ch = 0; ch < c; ++ch) {
      (*t1)[ch] += s1[ch];
      (*t2)[ch] += s2[ch];
    }
  }
}

}  // namespace

extern "C" {

void jsnet_batch_norm_moments_cpu(int64_t begin, int64_t end, int64_t rows, int c, const float* x,
                                  double* partial) {
  const auto sum_rows = JSNET_FOR_ISA(moment_rows);
  const std::vector<double> shift(x, x + c);
  for (int64_t b = begin; b < end; ++b) {
    int64_t first, count;
    BlockRows(b, rows, &first, &count);
    double* s1 = partial + b * 2 * c;
    double* s2 = s1 + c;
    std::fill(s1, s2 + c, 0.0);
    sum_rows(x + first * c, count, c, shift.data(), s1, s2);
  }
}

void jsnet_batch_norm_combine_moments_cpu(int64_t rows, int c, const float* x,
                                          const double* partial, float* mean, float* variance) {
  if (rows == 0) {
    std::fill(mean, mean + c, std::numeric_limits<float>::quiet_NaN());
    std::fill(variance, variance + c, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  std::vector<double> t1, t2;
  SumPartials(rows, c, partial, &t1, &t2);
  for (int ch = 0; ch < c; ++ch) {
    const double offset = t1[ch] / rows;  // mean - shift
    mean[ch] = static_cast<float>(static_cast<double>(x[ch]) + offset);
    variance[ch] = static_cast<float>(std::max(t2[ch] / rows - offset * offset, 0.0));
  }
}

void jsnet_batch_norm_normalize_cpu(int64_t begin, int64_t end, int c, const float* x,
                                    const float* mean, const float* variance, const float* gamma,
                                    const float* beta, float epsilon, int relu, float* y) {
  const std::vector<float> scale = Scales(c, variance, gamma, epsilon);
  JSNET_FOR_ISA(normalize_rows)(x + begin * c, end - begin, c, mean, scale.data(), beta, relu != 0,
                                y + begin * c);
}

void jsnet_batch_norm_grad_sums_cpu(int64_t begin, int64_t end, int64_t rows, int c,
                                    const float* grad_y, const float* x, const float* mean,
                                    const float* variance, const float* gamma, const float* beta,
                                    float epsilon, int relu, double* partial) {
  const auto sum_rows = JSNET_FOR_ISA(grad_sum_rows);
  const std::vector<float> scale = Scales(c, variance, gamma, epsilon);
  std::vector<float> masked(c);
  for (int64_t b = begin; b < end; ++b) {
    int64_t first, count;
    BlockRows(b, rows, &first, &count);
    double* s1 = partial + b * 2 * c;
    double* s2 = s1 + c;
    std::fill(s1, s2 + c, 0.0);
    sum_rows(grad_y + first * c, x + first * c, count, c, mean, scale.data(), beta, relu != 0,
             masked.data(), s1, s2);
  }
}

void jsnet_batch_norm_grad_combine_cpu(int64_t rows, int c, const double* partial,
                                       const float* variance, const float* gamma, float epsilon,
                                       float* grad_gamma, float* grad_beta, float* coefficients) {
  std::vector<double> t1, t2;
  SumPartials(rows, c, partial, &t1, &t2);
  const std::vector<float> scale = Scales(c, variance, gamma, epsilon);
  float* k2 = coefficients + c;
  float* k3 = coefficients + 2 * c;
  for (int ch = 0; ch < c; ++ch) {
    const double inv_std = 1.0 / std::sqrt(static_cast<double>(variance[ch]) + epsilon);
    grad_beta[ch] = static_cast<float>(t1[ch]);
    grad_gamma[ch] = static_cast<float>(t2[ch] * inv_std);
    coefficients[ch] = scale[ch];
    const double per_row = rows > 0 ? static_cast<double>(scale[ch]) / rows : 0.0;
    k2[ch] = static_cast<float>(-per_row * inv_std * inv_std * t2[ch]);
    k3[ch] = static_cast<float>(-per_row * t1[ch]);
  }
}

void jsnet_batch_norm_grad_x_cpu(int64_t begin, int64_t end, int c, const float* grad_y,
                                 const float* x, const float* mean, const float* beta, int relu,
                                 const float* coefficients, float* grad_x) {
  JSNET_FOR_ISA(grad_x_rows)(grad_y + begin * c, x + begin * c, end - begin, c, mean,
                             coefficients, coefficients + c, coefficients + 2 * c, beta,
                             relu != 0, grad_x + begin * c);
}

}  // extern "C"
