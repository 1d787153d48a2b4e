// Framework-free kernels of the training-mode batch norm (with an optional ReLU): the op
// JsnetBatchNormTraining and its gradient (ops.cc), and the GPU harness, call these plain C
// functions.
//
// x (R, C) row-major float32, per-channel gamma, beta (C):
//   mean = sum_r x / R, variance = sum_r (x - mean)^2 / R (biased), both (C);
//   y = (x - mean) * scale + beta, scale = gamma / sqrt(variance + epsilon), then max(y, 0) when
//   relu. In float32: y = ((x - mean) * scale) + beta with mean and scale rounded to float32 first
//   (no fused multiply-add), so the gradient can recompute the ReLU mask bit for bit.
// Gradient, with g = grad_y masked by y > 0 when relu, xhat = (x - mean) / sqrt(variance + eps):
//   grad_beta = sum_r g, grad_gamma = sum_r g * xhat,
//   grad_x = scale * (g - grad_beta / R - xhat * grad_gamma / R).
// mean and variance carry no gradient (they feed the moving averages only).
//
// Sums are taken in double over fixed blocks of rows (JSNET_BATCH_NORM_BLOCKS), and the blocks'
// partial sums are added in block order: the results do not depend on how the blocks are spread
// over threads. Inside a block the CPU adds the rows in order and the CUDA kernels in 8 strided
// lanes, so the two may differ in the last bit of a moment. The moments are summed around a shift (the
// first row), so E[d^2] - E[d]^2 does not cancel when the mean is large against the spread.
//
// CPU functions process the half-open range [begin, end) of work items (row blocks or rows, as
// named) so that a caller can split the work over a thread pool. CUDA launchers take device
// pointers, a workspace sized by jsnet_batch_norm_cuda_workspace_doubles and a cudaStream_t passed
// as void*; they return 0 or a cudaError_t value and are deterministic (no atomics).
#ifndef JSNET_TF_OPS_BATCH_NORM_KERNELS_H_
#define JSNET_TF_OPS_BATCH_NORM_KERNELS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Rows of one block of partial sums (the last block may hold fewer), and the blocks of R rows.
#define JSNET_BATCH_NORM_BLOCK_ROWS 512
#define JSNET_BATCH_NORM_BLOCKS(rows) \
  (((rows) + JSNET_BATCH_NORM_BLOCK_ROWS - 1) / JSNET_BATCH_NORM_BLOCK_ROWS)

// ---------------------------------------------------------- CPU kernels (batch_norm_kernels.cc)

// Work items: row blocks. x (R, C) -> partial (blocks, 2, C): per block the sums of d and d^2,
// d = x - x[0] (the shift).
void jsnet_batch_norm_moments_cpu(int64_t begin, int64_t end, int64_t rows, int c, const float* x,
                                  double* partial);
// partial of all blocks -> mean, variance (C). R = 0 gives NaN.
void jsnet_batch_norm_combine_moments_cpu(int64_t rows, int c, const float* x,
                                          const double* partial, float* mean, float* variance);
// Work items: rows. x (R, C) -> y (R, C).
void jsnet_batch_norm_normalize_cpu(int64_t begin, int64_t end, int c, const float* x,
                                    const float* mean, const float* variance, const float* gamma,
                                    const float* beta, float epsilon, int relu, float* y);

// Work items: row blocks. grad_y, x (R, C) -> partial (blocks, 2, C): per block the sums of g
// and g * (x - mean) (g: grad_y masked by the recomputed ReLU when relu).
void jsnet_batch_norm_grad_sums_cpu(int64_t begin, int64_t end, int64_t rows, int c,
                                    const float* grad_y, const float* x, const float* mean,
                                    const float* variance, const float* gamma, const float* beta,
                                    float epsilon, int relu, double* partial);
// partial of all blocks -> grad_gamma, grad_beta (C) and coefficients (3, C): scale, then k2, k3
// of grad_x = (g * scale + (x - mean) * k2) + k3.
void jsnet_batch_norm_grad_combine_cpu(int64_t rows, int c, const double* partial,
                                       const float* variance, const float* gamma, float epsilon,
                                       float* grad_gamma, float* grad_beta, float* coefficients);
// Work items: rows. grad_y, x (R, C) -> grad_x (R, C).
void jsnet_batch_norm_grad_x_cpu(int64_t begin, int64_t end, int c, const float* grad_y,
                                 const float* x, const float* mean, const float* beta, int relu,
                                 const float* coefficients, float* grad_x);

// ---------------------------------------------------------- CUDA launchers (batch_norm_kernels.cu)

// Workspace of both launchers, in doubles: the partial sums and per-channel coefficients.
int64_t jsnet_batch_norm_cuda_workspace_doubles(int64_t rows, int c);
// x (R, C) -> y (R, C), mean, variance (C).
int jsnet_batch_norm_cuda(int64_t rows, int c, const float* x, const float* gamma,
                          const float* beta, float epsilon, int relu, double* workspace, float* y,
                          float* mean, float* variance, void* stream);
// grad_y, x (R, C) and the forward's mean, variance -> grad_x (R, C), grad_gamma, grad_beta (C).
int jsnet_batch_norm_grad_cuda(int64_t rows, int c, const float* grad_y, const float* x,
                               const float* mean, const float* variance, const float* gamma,
                               const float* beta, float epsilon, int relu, double* workspace,
                               float* grad_x, float* grad_gamma, float* grad_beta, void* stream);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // JSNET_TF_OPS_BATCH_NORM_KERNELS_H_
