// CUDA kernels of the training-mode batch norm (contract and semantics: batch_norm_kernels.h).
//
// Sums: a thread block takes one block of JSNET_BATCH_NORM_BLOCK_ROWS rows and 32 channels; its
// 8 row lanes sum every 8th row in double, then add up in lane order; a second kernel adds the
// blocks' partial sums per channel in block order. No atomics, so every run gives the same bits.
// Elementwise passes round each float32 operation on its own (no contraction into a multiply-add),
// the arithmetic of the CPU kernels, so the gradient recomputes the forward's ReLU mask exactly.
#include <cuda_runtime.h>

#include <cmath>

#include "batch_norm_kernels.h"

namespace {

constexpr int kChannels = 32;  // channels of a thread block (threadIdx.x)
constexpr int kLanes = 8;      // rows side by side in a thread block (threadIdx.y)
constexpr int64_t kBlockRows = JSNET_BATCH_NORM_BLOCK_ROWS;
constexpr int kCombineThreads = 128;
constexpr int64_t kMaxRowGroups = 65535;  // thread blocks of the elementwise kernels (grid-stride)

// gamma / sqrt(variance + epsilon) in double, rounded once (as on the CPU).
__device__ float scale_of(float gamma, float variance, float epsilon) {
  return static_cast<float>(static_cast<double>(gamma) /
                            sqrt(static_cast<double>(variance) + static_cast<double>(epsilon)));
}

// (x - mean) * scale + beta, each operation rounded on its own.
__device__ float pre_activation(float x, float mean, float scale, float beta) {
  return __fadd_rn(__fmul_rn(__fsub_rn(x, mean), scale), beta);
}

// Writes the sums of this thread block's lane values a1, a2 (lanes added in order) to partial.
__device__ void store_block_sums(double a1, double a2, int c, int ch, double* partial) {
  __shared__ double s1[kLanes][kChannels], s2[kLanes][kChannels];
  s1[threadIdx.y][threadIdx.x] = a1;
  s2[threadIdx.y][threadIdx.x] = a2;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    double t1 = 0.0, t2 = 0.0;
    for (int l = 0; l < kLanes; ++l) {
      t1 += s1[l][threadIdx.x];
      t2 += s2[l][threadIdx.x];
    }
    double* block_sums = partial + static_cast<int64_t>(blockIdx.x) * 2 * c;
    block_sums[ch] = t1;
    block_sums[c + ch] = t2;
  }
}

// Grid (row blocks, channel tiles): per block the sums of d and d^2, d = x - x[0].
__global__ void moments_kernel(int64_t rows, int c, const float* __restrict__ x,
                               double* __restrict__ partial) {
  const int ch = blockIdx.y * kChannels + threadIdx.x;
  double a1 = 0.0, a2 = 0.0;
  if (ch < c) {
    const double shift = x[ch];
    const int64_t first = static_cast<int64_t>(blockIdx.x) * kBlockRows;
    const int64_t last = min(first + kBlockRows, rows);
    for (int64_t r = first + threadIdx.y; r < last; r += kLanes) {
      const double d = static_cast<double>(x[r * c + ch]) - shift;
      a1 += d;
      a2 += d * d;
    }
  }
  store_block_sums(a1, a2, c, ch, partial);
}

// Per channel: the blocks' sums in block order -> mean, variance and the scale.
__global__ void combine_moments_kernel(int64_t rows, int c, int64_t blocks,
                                       const float* __restrict__ x,
                                       const double* __restrict__ partial,
                                       const float* __restrict__ gamma, float epsilon,
                                       float* __restrict__ mean, float* __restrict__ variance,
                                       float* __restrict__ scale) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  if (rows == 0) {
    mean[ch] = variance[ch] = scale[ch] = nanf("");
    return;
  }
  double t1 = 0.0, t2 = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    t1 += partial[b * 2 * c + ch];
    t2 += partial[b * 2 * c + c + ch];
  }
  const double offset = t1 / rows;
  const float var = static_cast<float>(fmax(t2 / rows - offset * offset, 0.0));
  mean[ch] = static_cast<float>(static_cast<double>(x[ch]) + offset);
  variance[ch] = var;
  scale[ch] = scale_of(gamma[ch], var, epsilon);
}

__global__ void normalize_kernel(int64_t rows, int c, const float* __restrict__ x,
                                 const float* __restrict__ mean, const float* __restrict__ scale,
                                 const float* __restrict__ beta, int relu, float* __restrict__ y) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kLanes + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kLanes) {
    for (int ch = threadIdx.x; ch < c; ch += kChannels) {
      const float v = pre_activation(x[r * c + ch], mean[ch], scale[ch], beta[ch]);
      y[r * c + ch] = relu && v <= 0.0f ? 0.0f : v;  // NaN stays NaN, as in tf.nn.relu
    }
  }
}

__global__ void scale_kernel(int c, const float* __restrict__ variance,
                             const float* __restrict__ gamma, float epsilon,
                             float* __restrict__ scale) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch < c) scale[ch] = scale_of(gamma[ch], variance[ch], epsilon);
}

// The gradient with the ReLU mask applied (recomputed from x).
__device__ float kept_gradient(float g, float x, float mean, float scale, float beta, int relu) {
  return relu && !(pre_activation(x, mean, scale, beta) > 0.0f) ? 0.0f : g;
}

// Grid (row blocks, channel tiles): per block the sums of g and g * (x - mean).
__global__ void grad_sums_kernel(int64_t rows, int c, const float* __restrict__ grad_y,
                                 const float* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ scale, const float* __restrict__ beta,
                                 int relu, double* __restrict__ partial) {
  const int ch = blockIdx.y * kChannels + threadIdx.x;
  double a1 = 0.0, a2 = 0.0;
  if (ch < c) {
    const int64_t first = static_cast<int64_t>(blockIdx.x) * kBlockRows;
    const int64_t last = min(first + kBlockRows, rows);
    for (int64_t r = first + threadIdx.y; r < last; r += kLanes) {
      const float xv = x[r * c + ch];
      const double g = kept_gradient(grad_y[r * c + ch], xv, mean[ch], scale[ch], beta[ch], relu);
      a1 += g;
      a2 += g * (static_cast<double>(xv) - static_cast<double>(mean[ch]));
    }
  }
  store_block_sums(a1, a2, c, ch, partial);
}

// Per channel: grad_beta, grad_gamma and the coefficients k2, k3 of grad_x.
__global__ void grad_combine_kernel(int64_t rows, int c, int64_t blocks,
                                    const double* __restrict__ partial,
                                    const float* __restrict__ variance, float epsilon,
                                    const float* __restrict__ scale, float* __restrict__ grad_gamma,
                                    float* __restrict__ grad_beta, float* __restrict__ k2,
                                    float* __restrict__ k3) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double t1 = 0.0, t2 = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    t1 += partial[b * 2 * c + ch];
    t2 += partial[b * 2 * c + c + ch];
  }
  const double inv_std = 1.0 / sqrt(static_cast<double>(variance[ch]) + static_cast<double>(epsilon));
  grad_beta[ch] = static_cast<float>(t1);
  grad_gamma[ch] = static_cast<float>(t2 * inv_std);
  const double per_row = rows > 0 ? static_cast<double>(scale[ch]) / rows : 0.0;
  k2[ch] = static_cast<float>(-per_row * inv_std * inv_std * t2);
  k3[ch] = static_cast<float>(-per_row * t1);
}

__global__ void grad_x_kernel(int64_t rows, int c, const float* __restrict__ grad_y,
                              const float* __restrict__ x, const float* __restrict__ mean,
                              const float* __restrict__ scale, const float* __restrict__ k2,
                              const float* __restrict__ k3, const float* __restrict__ beta,
                              int relu, float* __restrict__ grad_x) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kLanes + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kLanes) {
    for (int ch = threadIdx.x; ch < c; ch += kChannels) {
      const int64_t i = r * c + ch;
      const float g = kept_gradient(grad_y[i], x[i], mean[ch], scale[ch], beta[ch], relu);
      const float centred = __fsub_rn(x[i], mean[ch]);
      grad_x[i] = __fadd_rn(__fadd_rn(__fmul_rn(g, scale[ch]), __fmul_rn(centred, k2[ch])), k3[ch]);
    }
  }
}

dim3 SumGrid(int64_t rows, int c) {
  return dim3(static_cast<unsigned>(JSNET_BATCH_NORM_BLOCKS(rows)),
              static_cast<unsigned>((c + kChannels - 1) / kChannels));
}

unsigned RowGroups(int64_t rows) {
  return static_cast<unsigned>(min((rows + kLanes - 1) / kLanes, kMaxRowGroups));
}

unsigned ChannelBlocks(int c) { return (c + kCombineThreads - 1) / kCombineThreads; }

// The per-channel float coefficients after the partial sums in the workspace.
float* Coefficients(double* workspace, int64_t rows, int c) {
  return reinterpret_cast<float*>(workspace + JSNET_BATCH_NORM_BLOCKS(rows) * 2 * c);
}

}  // namespace

extern "C" {

int64_t jsnet_batch_norm_cuda_workspace_doubles(int64_t rows, int c) {
  return (JSNET_BATCH_NORM_BLOCKS(rows) * 2 + 2) * static_cast<int64_t>(c);  // 3c floats in 2c
}

int jsnet_batch_norm_cuda(int64_t rows, int c, const float* x, const float* gamma,
                          const float* beta, float epsilon, int relu, double* workspace, float* y,
                          float* mean, float* variance, void* stream) {
  if (c == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t blocks = JSNET_BATCH_NORM_BLOCKS(rows);
  float* scale = Coefficients(workspace, rows, c);
  const dim3 lanes(kChannels, kLanes);
  if (blocks > 0) moments_kernel<<<SumGrid(rows, c), lanes, 0, s>>>(rows, c, x, workspace);
  combine_moments_kernel<<<ChannelBlocks(c), kCombineThreads, 0, s>>>(
      rows, c, blocks, x, workspace, gamma, epsilon, mean, variance, scale);
  if (rows > 0) {
    normalize_kernel<<<RowGroups(rows), lanes, 0, s>>>(rows, c, x, mean, scale, beta, relu, y);
  }
  return static_cast<int>(cudaGetLastError());
}

int jsnet_batch_norm_grad_cuda(int64_t rows, int c, const float* grad_y, const float* x,
                               const float* mean, const float* variance, const float* gamma,
                               const float* beta, float epsilon, int relu, double* workspace,
                               float* grad_x, float* grad_gamma, float* grad_beta, void* stream) {
  if (c == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t blocks = JSNET_BATCH_NORM_BLOCKS(rows);
  float* scale = Coefficients(workspace, rows, c);
  float* k2 = scale + c;
  float* k3 = scale + 2 * c;
  const dim3 lanes(kChannels, kLanes);
  scale_kernel<<<ChannelBlocks(c), kCombineThreads, 0, s>>>(c, variance, gamma, epsilon, scale);
  if (blocks > 0) {
    grad_sums_kernel<<<SumGrid(rows, c), lanes, 0, s>>>(rows, c, grad_y, x, mean, scale, beta,
                                                        relu, workspace);
  }
  grad_combine_kernel<<<ChannelBlocks(c), kCombineThreads, 0, s>>>(
      rows, c, blocks, workspace, variance, epsilon, scale, grad_gamma, grad_beta, k2, k3);
  if (rows > 0) {
    grad_x_kernel<<<RowGroups(rows), lanes, 0, s>>>(rows, c, grad_y, x, mean, scale, k2, k3, beta,
                                                    relu, grad_x);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // extern "C"
