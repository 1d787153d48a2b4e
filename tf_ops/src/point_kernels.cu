// CUDA launchers of the JSNet point ops (contract and semantics: point_kernels.h).
//
// Every squared distance is dx*dx + dy*dy + dz*dz evaluated with explicit round-to-nearest
// intrinsics (__fsub_rn/__fmul_rn/__fadd_rn), which the compiler never contracts into FMAs, so
// the values are bit-identical to the CPU kernels (built with -ffp-contract=off) whatever the
// nvcc flags. three_interpolate uses the same intrinsics for (w0*p0 + w1*p1) + w2*p2.
//
// Kernel overview
//   farthest_point_sample  one block per batch element; points and running min-distances live in
//                          registers (N <= 8192) or in the caller's temp buffer (larger N); the
//                          arg-max is a warp/block reduction over 64-bit keys
//                          (distance bits << 32 | ~index), so ties go to the lower index.
//   query_ball_point,      one thread per query, the candidate points of the batch element are
//   knn (k <= 32),         staged through shared memory in tiles and scanned in index order.
//   three_nn               knn / three_nn keep a sorted top-k list in registers.
//   knn (k > 32)           one block per query: an exact radix select of the k-th smallest
//                          (distance, index) key over 8-bit digits, a compaction of the k
//                          selected keys and a bitonic sort (shared memory for k <= 4096, else in
//                          place in the output arrays). Needs no workspace.
//   gather / group /       grid-stride element-wise loops; the gradients zero their output with
//   three_interpolate      cudaMemsetAsync and accumulate with atomicAdd (order not deterministic).
//   gather_weight_net_sum  thread per output channel, each neighbour's channel weight made in a
//                          register; gradients: thread per (row, neighbour, channel) for the
//                          points (atomicAdd), per (row, neighbour, unit) for hidden, per (block of
//                          rows, kernel or bias row, channel) for kernel and bias (atomicAdd).
//   validation helpers     grid-stride scan with a warp min-reduction and a 64-bit atomicMin into
//                          *result, which is preset to all-ones bytes (== -1 as int64).
#include "point_kernels.h"

#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kElementwiseThreads = 256;
constexpr int64_t kMaxElementwiseBlocks = 65536;
constexpr int kMaxGridY = 65535;

// FPS keeps kFpsMaxPointsPerThread points per thread in registers.
constexpr int kFpsThreads = 1024;
constexpr int kFpsMaxPointsPerThread = 8;

// Thread-per-query scans (ball query, small-k knn, three_nn).
constexpr int kScanThreads = 64;
constexpr int kKnnRegisterMaxK = 32;

// Block-per-query knn selection for k > kKnnRegisterMaxK.
constexpr int kSelectThreads = 256;
constexpr int kSelectSharedMaxK = 4096;  // 32 KiB of 64-bit keys
constexpr int64_t kSelectMaxBlocks = 1 << 20;

__device__ __forceinline__ float inf_f() { return __int_as_float(0x7f800000); }

__device__ __forceinline__ float squared_distance(float ax, float ay, float az, float bx, float by,
                                                  float bz) {
  const float dx = __fsub_rn(ax, bx);
  const float dy = __fsub_rn(ay, by);
  const float dz = __fsub_rn(az, bz);
  return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

inline int launch_status() { return static_cast<int>(cudaGetLastError()); }

inline unsigned elementwise_blocks(int64_t total) {
  int64_t blocks = (total + kElementwiseThreads - 1) / kElementwiseThreads;
  if (blocks > kMaxElementwiseBlocks) blocks = kMaxElementwiseBlocks;
  return static_cast<unsigned>(blocks);
}

// 32-bit indexing when every flat offset, plus one grid stride, stays below 2^31.
inline bool fits_int32(int64_t v) { return v < (static_cast<int64_t>(1) << 30); }

// ------------------------------------------------------------------------ farthest point sample

// Arg-max keys: larger distance wins, then the lower index (stored complemented).
__device__ __forceinline__ unsigned long long fps_key(float d, int i) {
  return (static_cast<unsigned long long>(__float_as_uint(d)) << 32) |
         static_cast<unsigned long long>(~static_cast<unsigned>(i));
}

__device__ __forceinline__ unsigned long long warp_max_key(unsigned long long key) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned hi = __reduce_max_sync(kFullMask, static_cast<unsigned>(key >> 32));
  const unsigned lo_in = (static_cast<unsigned>(key >> 32) == hi) ? static_cast<unsigned>(key) : 0u;
  const unsigned lo = __reduce_max_sync(kFullMask, lo_in);
  return (static_cast<unsigned long long>(hi) << 32) | lo;
#else
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const unsigned long long other = __shfl_xor_sync(kFullMask, key, offset);
    key = other > key ? other : key;
  }
  return key;
#endif
}

// Block-wide max of `key`; every thread gets the result. `scratch` holds one key per warp,
// `result` one key. Contains two __syncthreads; safe to call back to back.
__device__ __forceinline__ unsigned long long block_max_key(unsigned long long key,
                                                            unsigned long long* scratch,
                                                            unsigned long long* result) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  key = warp_max_key(key);
  if (lane == 0) scratch[warp] = key;
  __syncthreads();
  if (warp == 0) {
    unsigned long long v = lane < nwarps ? scratch[lane] : 0ull;
    v = warp_max_key(v);
    if (lane == 0) *result = v;
  }
  __syncthreads();
  return *result;
}

// Points and running minimum distances in registers: thread t owns points t + j * blockDim.x.
template <int PPT>
__global__ void __launch_bounds__(kFpsThreads)
    fps_register_kernel(int b, int n, int npoint, const float* __restrict__ xyz,
                        int* __restrict__ idx) {
  __shared__ unsigned long long s_scratch[32];
  __shared__ unsigned long long s_result;
  const int stride = blockDim.x;
  for (int bi = blockIdx.x; bi < b; bi += gridDim.x) {
    const float* p = xyz + static_cast<int64_t>(bi) * n * 3;
    int* out = idx + static_cast<int64_t>(bi) * npoint;
    float px[PPT], py[PPT], pz[PPT], md[PPT];
#pragma unroll
    for (int j = 0; j < PPT; ++j) {
      const int i = threadIdx.x + j * stride;
      if (i < n) {
        px[j] = p[3 * i];
        py[j] = p[3 * i + 1];
        pz[j] = p[3 * i + 2];
      } else {
        px[j] = py[j] = pz[j] = 0.0f;
      }
      md[j] = inf_f();
    }
    if (threadIdx.x == 0) out[0] = 0;
    int last = 0;
    for (int s = 1; s < npoint; ++s) {
      const float cx = __ldg(p + 3 * last);
      const float cy = __ldg(p + 3 * last + 1);
      const float cz = __ldg(p + 3 * last + 2);
      unsigned long long best = 0ull;  // below every real key
#pragma unroll
      for (int j = 0; j < PPT; ++j) {
        const int i = threadIdx.x + j * stride;
        if (i < n) {
          const float d = squared_distance(px[j], py[j], pz[j], cx, cy, cz);
          const float t = d < md[j] ? d : md[j];
          md[j] = t;
          const unsigned long long key = fps_key(t, i);
          best = key > best ? key : best;
        }
      }
      best = block_max_key(best, s_scratch, &s_result);
      last = static_cast<int>(~static_cast<unsigned>(best));
      if (threadIdx.x == 0) out[s] = last;
    }
    __syncthreads();  // s_result is re-used by the next batch element
  }
}

// Any n: running minimum distances in the caller's temp buffer (B * N floats).
__global__ void __launch_bounds__(kFpsThreads)
    fps_global_kernel(int b, int n, int npoint, const float* __restrict__ xyz,
                      float* __restrict__ temp, int* __restrict__ idx) {
  __shared__ unsigned long long s_scratch[32];
  __shared__ unsigned long long s_result;
  for (int bi = blockIdx.x; bi < b; bi += gridDim.x) {
    const float* p = xyz + static_cast<int64_t>(bi) * n * 3;
    float* md = temp + static_cast<int64_t>(bi) * n;
    int* out = idx + static_cast<int64_t>(bi) * npoint;
    for (int i = threadIdx.x; i < n; i += blockDim.x) md[i] = inf_f();
    if (threadIdx.x == 0) out[0] = 0;
    int last = 0;
    for (int s = 1; s < npoint; ++s) {
      const float cx = __ldg(p + 3 * last);
      const float cy = __ldg(p + 3 * last + 1);
      const float cz = __ldg(p + 3 * last + 2);
      unsigned long long best = 0ull;
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float d = squared_distance(p[3 * i], p[3 * i + 1], p[3 * i + 2], cx, cy, cz);
        const float old = md[i];
        const float t = d < old ? d : old;
        md[i] = t;
        const unsigned long long key = fps_key(t, i);
        best = key > best ? key : best;
      }
      best = block_max_key(best, s_scratch, &s_result);
      last = static_cast<int>(~static_cast<unsigned>(best));
      if (threadIdx.x == 0) out[s] = last;
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------------------- gather / group

template <typename I>
__global__ void gather_point_kernel(I total, int n, int m, const float* __restrict__ xyz,
                                    const int* __restrict__ idx, float* __restrict__ out) {
  for (I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
       e < total; e += static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x)) {
    const I row = e / 3;
    const I comp = e - row * 3;
    const I bi = row / m;
    out[e] = xyz[(bi * n + idx[row]) * 3 + comp];
  }
}

template <typename I>
__global__ void gather_point_grad_kernel(I total, int n, int m, const float* __restrict__ grad_out,
                                         const int* __restrict__ idx,
                                         float* __restrict__ grad_xyz) {
  for (I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
       e < total; e += static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x)) {
    const I row = e / 3;
    const I comp = e - row * 3;
    const I bi = row / m;
    atomicAdd(grad_xyz + (bi * n + idx[row]) * 3 + comp, grad_out[e]);
  }
}

// out row (b * M + m) * nsample + s, channel ch <- points[b, idx[row], ch].
template <typename I>
__global__ void group_point_kernel(I total, int n, int c, I rows_per_batch,
                                   const float* __restrict__ points, const int* __restrict__ idx,
                                   float* __restrict__ out) {
  for (I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
       e < total; e += static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x)) {
    const I row = e / c;
    const I ch = e - row * c;
    const I bi = row / rows_per_batch;
    out[e] = points[(bi * n + idx[row]) * c + ch];
  }
}

template <typename I>
__global__ void group_point_grad_kernel(I total, int n, int c, I rows_per_batch,
                                        const float* __restrict__ grad_out,
                                        const int* __restrict__ idx,
                                        float* __restrict__ grad_points) {
  for (I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
       e < total; e += static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x)) {
    const I row = e / c;
    const I ch = e - row * c;
    const I bi = row / rows_per_batch;
    atomicAdd(grad_points + (bi * n + idx[row]) * c + ch, grad_out[e]);
  }
}

// --------------------------------------------------------------------------- three_interpolate

// out[b, i, ch] = (w0 * p0 + w1 * p1) + w2 * p2 with rows b * N + i.
template <typename I>
__global__ void three_interpolate_kernel(I total, int m, int c, int n,
                                         const float* __restrict__ points,
                                         const int* __restrict__ idx,
                                         const float* __restrict__ weight,
                                         float* __restrict__ out) {
  for (I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
       e < total; e += static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x)) {
    const I row = e / c;
    const I ch = e - row * c;
    const I base = (row / n) * m;
    const float v0 = points[(base + idx[row * 3]) * c + ch];
    const float v1 = points[(base + idx[row * 3 + 1]) * c + ch];
    const float v2 = points[(base + idx[row * 3 + 2]) * c + ch];
    const float s01 = __fadd_rn(__fmul_rn(weight[row * 3], v0), __fmul_rn(weight[row * 3 + 1], v1));
    out[e] = __fadd_rn(s01, __fmul_rn(weight[row * 3 + 2], v2));
  }
}

template <typename I>
__global__ void three_interpolate_grad_kernel(I total, int m, int c, int n,
                                              const float* __restrict__ grad_out,
                                              const int* __restrict__ idx,
                                              const float* __restrict__ weight,
                                              float* __restrict__ grad_points) {
  for (I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
       e < total; e += static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x)) {
    const I row = e / c;
    const I ch = e - row * c;
    const I base = (row / n) * m;
    const float g = grad_out[e];
#pragma unroll
    for (int s = 0; s < 3; ++s) {
      atomicAdd(grad_points + (base + idx[row * 3 + s]) * c + ch,
                __fmul_rn(weight[row * 3 + s], g));
    }
  }
}

// ------------------------------------------------------------------- gather_weight_net_sum
// 64-bit indexing throughout (the gradients' index spaces, B * M * nsample * C, exceed 2^31 at
// S3DIS sizes); rows are b * M + m.

// Rows of the kernel and bias gradient summed by one thread before its atomicAdd.
constexpr int kWeightNetRowsPerThread = 64;

// The channel weight of neighbour row `hid` (units values) for channel ch.
__device__ inline float channel_weight(const float* __restrict__ hid, int units,
                                       const float* __restrict__ kernel,
                                       const float* __restrict__ bias, int c, int64_t ch) {
  float w = bias[ch];
  for (int h = 0; h < units; ++h) w = fmaf(hid[h], kernel[h * static_cast<int64_t>(c) + ch], w);
  return w;
}

__global__ void gather_weight_net_sum_kernel(int64_t total, int n, int c, int m, int nsample,
                                             int units, const float* __restrict__ points,
                                             const int* __restrict__ idx,
                                             const float* __restrict__ hidden,
                                             const float* __restrict__ kernel,
                                             const float* __restrict__ bias,
                                             float* __restrict__ out) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = e / c, ch = e - row * c, base = row / m * n;
    float acc = 0.0f;
    for (int s = 0; s < nsample; ++s) {
      const int64_t pair = row * nsample + s;
      const float w = channel_weight(hidden + pair * units, units, kernel, bias, c, ch);
      acc = fmaf(points[(base + idx[pair]) * c + ch], w, acc);
    }
    out[e] = acc;
  }
}

// Element e = (row * nsample + s) * C + ch: grad_out[row, ch] * w added into the point's gradient.
__global__ void weight_net_grad_points_kernel(int64_t total, int n, int c, int m, int nsample,
                                              int units, const int* __restrict__ idx,
                                              const float* __restrict__ hidden,
                                              const float* __restrict__ kernel,
                                              const float* __restrict__ bias,
                                              const float* __restrict__ grad_out,
                                              float* __restrict__ grad_points) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pair = e / c, ch = e - pair * c, row = pair / nsample;
    const float w = channel_weight(hidden + pair * units, units, kernel, bias, c, ch);
    atomicAdd(grad_points + (row / m * n + idx[pair]) * c + ch, grad_out[row * c + ch] * w);
  }
}

// Element e = (row * nsample + s) * units + h: sum_ch grad_out[row, ch] points[idx, ch] kernel[h, ch].
__global__ void weight_net_grad_hidden_kernel(int64_t total, int n, int c, int m, int nsample,
                                              int units, const float* __restrict__ points,
                                              const int* __restrict__ idx,
                                              const float* __restrict__ kernel,
                                              const float* __restrict__ grad_out,
                                              float* __restrict__ grad_hidden) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pair = e / units, h = e - pair * units, row = pair / nsample;
    const float* p = points + (row / m * n + idx[pair]) * c;
    const float* g = grad_out + row * c;
    const float* k = kernel + h * c;
    float acc = 0.0f;
    for (int ch = 0; ch < c; ++ch) acc = fmaf(g[ch] * p[ch], k[ch], acc);
    grad_hidden[e] = acc;
  }
}

// Element e = (block * (units + 1) + h) * C + ch: the sum over the block's rows and neighbours
// of hidden[row, s, h] (1 for h == units, the bias) * grad_out[row, ch] * points[idx, ch].
__global__ void weight_net_grad_kernel_bias_kernel(int64_t total, int64_t rows, int n, int c,
                                                   int m, int nsample, int units,
                                                   const float* __restrict__ points,
                                                   const int* __restrict__ idx,
                                                   const float* __restrict__ hidden,
                                                   const float* __restrict__ grad_out,
                                                   float* __restrict__ grad_kernel,
                                                   float* __restrict__ grad_bias) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t line = e / c, ch = e - line * c;
    const int64_t block = line / (units + 1), h = line - block * (units + 1);
    const int64_t first = block * kWeightNetRowsPerThread;
    const int64_t last = min(rows, first + kWeightNetRowsPerThread);
    float acc = 0.0f;
    for (int64_t row = first; row < last; ++row) {
      const float g = grad_out[row * c + ch];
      const int64_t base = row / m * n;
      for (int s = 0; s < nsample; ++s) {
        const int64_t pair = row * nsample + s;
        const float u = g * points[(base + idx[pair]) * c + ch];
        acc = h < units ? fmaf(hidden[pair * units + h], u, acc) : acc + u;
      }
    }
    atomicAdd(h < units ? grad_kernel + h * c + ch : grad_bias + ch, acc);
  }
}

// ----------------------------------------------------------------- thread-per-query point scans

// Stages points [start, start + count) of one batch element (x, y, z interleaved) in `tile`.
__device__ __forceinline__ void load_tile(const float* __restrict__ src, int start, int count,
                                          float* tile) {
  const float* s = src + static_cast<int64_t>(start) * 3;
  for (int f = threadIdx.x; f < 3 * count; f += blockDim.x) tile[f] = s[f];
}

// Queries new_xyz[b, blockIdx.x * blockDim.x + threadIdx.x]; grid.y strides over batch elements.
__global__ void __launch_bounds__(kScanThreads)
    query_ball_point_kernel(int b, int n, int m, float r2, int nsample,
                            const float* __restrict__ xyz, const float* __restrict__ new_xyz,
                            int* __restrict__ idx, int* __restrict__ pts_cnt) {
  __shared__ float tile[3 * kScanThreads];
  const int qi = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = qi < m;
  for (int bi = blockIdx.y; bi < b; bi += gridDim.y) {
    const int64_t q = static_cast<int64_t>(bi) * m + qi;
    float qx = 0.0f, qy = 0.0f, qz = 0.0f;
    if (active) {
      qx = new_xyz[q * 3];
      qy = new_xyz[q * 3 + 1];
      qz = new_xyz[q * 3 + 2];
    }
    int* out = idx + q * nsample;
    const float* src = xyz + static_cast<int64_t>(bi) * n * 3;
    int cnt = 0;
    int first = 0;
    for (int start = 0; start < n; start += blockDim.x) {
      // Doubles as the barrier that protects the tile from the previous round's readers.
      if (!__syncthreads_or(active && cnt < nsample)) break;
      const int count = min(static_cast<int>(blockDim.x), n - start);
      load_tile(src, start, count, tile);
      __syncthreads();
      if (active && cnt < nsample) {
        for (int t = 0; t < count; ++t) {
          const float d =
              squared_distance(tile[3 * t], tile[3 * t + 1], tile[3 * t + 2], qx, qy, qz);
          if (d < r2) {
            if (cnt == 0) first = start + t;
            out[cnt] = start + t;
            if (++cnt == nsample) break;
          }
        }
      }
    }
    if (active) {
      for (int s = cnt; s < nsample; ++s) out[s] = first;
      pts_cnt[q] = cnt;
    }
    __syncthreads();  // the next batch element reloads the tile
  }
}

// Sorted ascending top-K list in registers, ordered by (distance, index), with sentinels
// (+inf, INT_MAX), so every candidate (even one at +inf) displaces a sentinel.
// Candidates arrive in increasing index order, so an equal distance lands behind the earlier one.
template <int K>
struct TopK {
  float d[K];
  int i[K];

  // The first K - k slots are pinned with (-inf, -1), so only the last k slots take candidates.
  __device__ __forceinline__ void init(int k) {
#pragma unroll
    for (int s = 0; s < K; ++s) {
      if (s < K - k) {
        d[s] = -inf_f();
        i[s] = -1;
      } else {
        d[s] = inf_f();
        i[s] = 0x7fffffff;
      }
    }
  }

  __device__ __forceinline__ static bool less(float da, int ia, float db, int ib) {
    return da < db || (da == db && ia < ib);
  }

  __device__ __forceinline__ void offer(float dc, int ic) {
    if (!less(dc, ic, d[K - 1], i[K - 1])) return;
    bool take = true;  // dc belongs at or before slot s
#pragma unroll
    for (int s = K - 1; s > 0; --s) {
      const bool before_prev = less(dc, ic, d[s - 1], i[s - 1]);
      if (take) {
        d[s] = before_prev ? d[s - 1] : dc;
        i[s] = before_prev ? i[s - 1] : ic;
      }
      take = before_prev;
    }
    if (take) {
      d[0] = dc;
      i[0] = ic;
    }
  }
};

// For each query q of (B, nq, 3) the k nearest of the nc candidates of its batch element,
// written to out_d / out_i (B, nq, k). Sentinel indices left at the end (fewer than k
// candidates) are written as 0.
template <int K>
__global__ void __launch_bounds__(kScanThreads)
    nearest_scan_kernel(int b, int nq, int nc, int k, const float* __restrict__ cand,
                        const float* __restrict__ query, float* __restrict__ out_d,
                        int* __restrict__ out_i) {
  __shared__ float tile[3 * kScanThreads];
  const int qi = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = qi < nq;
  for (int bi = blockIdx.y; bi < b; bi += gridDim.y) {
    const int64_t q = static_cast<int64_t>(bi) * nq + qi;
    float qx = 0.0f, qy = 0.0f, qz = 0.0f;
    if (active) {
      qx = query[q * 3];
      qy = query[q * 3 + 1];
      qz = query[q * 3 + 2];
    }
    const float* src = cand + static_cast<int64_t>(bi) * nc * 3;
    TopK<K> top;
    top.init(k);
    for (int start = 0; start < nc; start += blockDim.x) {
      const int count = min(static_cast<int>(blockDim.x), nc - start);
      __syncthreads();
      load_tile(src, start, count, tile);
      __syncthreads();
      if (active) {
        for (int t = 0; t < count; ++t) {
          top.offer(squared_distance(tile[3 * t], tile[3 * t + 1], tile[3 * t + 2], qx, qy, qz),
                    start + t);
        }
      }
    }
    if (active) {
      float* od = out_d + q * k;
      int* oi = out_i + q * k;
#pragma unroll
      for (int s = 0; s < K; ++s) {
        if (s >= K - k) {
          od[s - (K - k)] = top.d[s];
          oi[s - (K - k)] = top.i[s] == 0x7fffffff ? 0 : top.i[s];
        }
      }
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------------- knn selection (k > 32)

// Unique 64-bit ordering key of a candidate: distance bits (non-negative floats order like their
// bit patterns) then index.
__device__ __forceinline__ unsigned long long knn_key(float d, int i) {
  return (static_cast<unsigned long long>(__float_as_uint(d)) << 32) | static_cast<unsigned>(i);
}

__device__ __forceinline__ float key_dist(unsigned long long key) {
  return __uint_as_float(static_cast<unsigned>(key >> 32));
}

__device__ __forceinline__ int key_index(unsigned long long key) {
  return static_cast<int>(static_cast<unsigned>(key));
}

// Ascending bitonic sort of `count` keys (any count; positions >= count act as +inf and never
// move). Keys come either from shared memory (`keys`) or, when keys == nullptr, from the global
// (dist, idx) pairs. Comparators always put the smaller key at the lower position.
__device__ void block_bitonic_sort(int count, unsigned long long* keys, float* dist, int* idx) {
  int pow2 = 1;
  while (pow2 < count) pow2 <<= 1;
  const int pairs = pow2 >> 1;
  for (int size = 2; size <= pow2; size <<= 1) {
    for (int j = size >> 1; j > 0; j >>= 1) {
      const bool flip = j == (size >> 1);
      for (int t = threadIdx.x; t < pairs; t += blockDim.x) {
        // Insert a zero bit at position log2(j): lo has bit j clear.
        const int lo = ((t & ~(j - 1)) << 1) | (t & (j - 1));
        const int hi = flip ? (lo ^ (size - 1)) : (lo | j);
        if (hi >= count) continue;
        if (keys != nullptr) {
          const unsigned long long a = keys[lo];
          const unsigned long long c = keys[hi];
          if (a > c) {
            keys[lo] = c;
            keys[hi] = a;
          }
        } else {
          const unsigned long long a = knn_key(dist[lo], idx[lo]);
          const unsigned long long c = knn_key(dist[hi], idx[hi]);
          if (a > c) {
            dist[lo] = key_dist(c);
            idx[lo] = key_index(c);
            dist[hi] = key_dist(a);
            idx[hi] = key_index(a);
          }
        }
      }
      __syncthreads();
    }
  }
}

// One block per query (grid-stride over queries). Radix select over the 8 bytes of the unique
// candidate keys finds the k-th smallest key, stopping as soon as the bucket holding it contains
// exactly the remaining rank; the keys at or below it (exactly k) are compacted and sorted.
__global__ void __launch_bounds__(kSelectThreads)
    knn_select_kernel(int b, int n, int m, int k, const float* __restrict__ xyz,
                      const float* __restrict__ new_xyz, float* __restrict__ dist,
                      int* __restrict__ idx, int use_shared_keys) {
  extern __shared__ unsigned long long s_keys[];
  __shared__ unsigned s_hist[256];
  __shared__ unsigned long long s_prefix;
  __shared__ int s_remaining;
  __shared__ int s_done;
  __shared__ int s_count;
  const int64_t total = static_cast<int64_t>(b) * m;
  for (int64_t q = blockIdx.x; q < total; q += gridDim.x) {
    const int64_t bi = q / m;
    const float qx = new_xyz[q * 3];
    const float qy = new_xyz[q * 3 + 1];
    const float qz = new_xyz[q * 3 + 2];
    const float* p = xyz + bi * n * 3;
    float* od = dist + q * k;
    int* oi = idx + q * k;

    unsigned long long prefix = 0ull;
    int remaining = k;
    int shift = 56;
    for (;; shift -= 8) {
      for (int h = threadIdx.x; h < 256; h += blockDim.x) s_hist[h] = 0u;
      __syncthreads();
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const unsigned long long key =
            knn_key(squared_distance(p[3 * i], p[3 * i + 1], p[3 * i + 2], qx, qy, qz), i);
        if (shift == 56 || (key >> (shift + 8)) == prefix) {
          atomicAdd(&s_hist[static_cast<unsigned>(key >> shift) & 255u], 1u);
        }
      }
      __syncthreads();
      if (threadIdx.x < 32) {
        // Lane l owns buckets 8l .. 8l + 7; an inclusive warp scan of the lane sums locates the
        // bucket where the running count reaches `remaining`.
        const int lane = threadIdx.x;
        unsigned local[8];
        unsigned lane_sum = 0u;
#pragma unroll
        for (int h = 0; h < 8; ++h) {
          local[h] = s_hist[8 * lane + h];
          lane_sum += local[h];
        }
        unsigned incl = lane_sum;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
          const unsigned v = __shfl_up_sync(kFullMask, incl, off);
          if (lane >= off) incl += v;
        }
        const unsigned need = static_cast<unsigned>(remaining);
        const unsigned ballot = __ballot_sync(kFullMask, incl >= need);
        const int owner = __ffs(ballot) - 1;  // the total count is >= need, so ballot != 0
        if (lane == owner) {
          unsigned below = incl - lane_sum;  // count in the buckets before this lane's
          int bucket = -1;
#pragma unroll
          for (int h = 0; h < 8; ++h) {
            if (bucket < 0) {
              if (below + local[h] >= need) {
                bucket = 8 * lane + h;
              } else {
                below += local[h];
              }
            }
          }
          const unsigned in_bucket = s_hist[bucket];
          const int rem = static_cast<int>(need - below);
          s_prefix = (prefix << 8) | static_cast<unsigned>(bucket);
          s_remaining = rem;
          s_done = (static_cast<unsigned>(rem) == in_bucket) || shift == 0;
        }
      }
      __syncthreads();
      prefix = s_prefix;
      remaining = s_remaining;
      const bool done = s_done != 0;
      __syncthreads();  // shared results are read before the next pass overwrites them
      if (done) break;
    }

    // Compaction: exactly k keys satisfy (key >> shift) <= prefix; their order is irrelevant
    // (sorted next).
    if (threadIdx.x == 0) s_count = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float d = squared_distance(p[3 * i], p[3 * i + 1], p[3 * i + 2], qx, qy, qz);
      const unsigned long long key = knn_key(d, i);
      if ((key >> shift) <= prefix) {
        const int pos = atomicAdd(&s_count, 1);
        if (use_shared_keys) {
          s_keys[pos] = key;
        } else {
          od[pos] = d;
          oi[pos] = i;
        }
      }
    }
    __syncthreads();
    if (use_shared_keys) {
      block_bitonic_sort(k, s_keys, nullptr, nullptr);
      for (int s = threadIdx.x; s < k; s += blockDim.x) {
        const unsigned long long key = s_keys[s];
        od[s] = key_dist(key);
        oi[s] = key_index(key);
      }
    } else {
      block_bitonic_sort(k, nullptr, od, oi);
    }
    __syncthreads();
  }
}

template <int K>
void launch_knn_scan(int b, int n, int m, int k, const float* xyz, const float* new_xyz,
                     float* dist, int* idx, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((m + kScanThreads - 1) / kScanThreads),
                  static_cast<unsigned>(b < kMaxGridY ? b : kMaxGridY));
  nearest_scan_kernel<K><<<grid, kScanThreads, 0, stream>>>(b, m, n, k, xyz, new_xyz, dist,
                                                                    idx);
}

// ------------------------------------------------------------------------------ validation

__device__ __forceinline__ unsigned long long warp_min_u64(unsigned long long v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const unsigned long long other = __shfl_xor_sync(kFullMask, v, offset);
    v = other < v ? other : v;
  }
  return v;
}

// *result holds all-ones (-1 as int64, the largest unsigned value) before the launch; the first
// offending position found by each warp is folded in with an unsigned atomicMin.
__global__ void first_non_finite_kernel(int64_t count, const float* __restrict__ values,
                                        unsigned long long* result) {
  unsigned long long found = ~0ull;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if ((__float_as_uint(values[e]) & 0x7f800000u) == 0x7f800000u) {
      found = static_cast<unsigned long long>(e);
      break;
    }
  }
  found = warp_min_u64(found);
  if ((threadIdx.x & 31) == 0 && found != ~0ull) atomicMin(result, found);
}

__global__ void first_out_of_range_kernel(int64_t count, const int* __restrict__ values, int limit,
                                          unsigned long long* result) {
  unsigned long long found = ~0ull;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int v = values[e];
    if (v < 0 || v >= limit) {
      found = static_cast<unsigned long long>(e);
      break;
    }
  }
  found = warp_min_u64(found);
  if ((threadIdx.x & 31) == 0 && found != ~0ull) atomicMin(result, found);
}

}  // namespace

extern "C" {

int jsnet_farthest_point_sample_cuda(int b, int n, int npoint, const float* xyz, float* temp,
                                     int* idx, void* stream) {
  if (b <= 0 || npoint <= 0) return 0;
  const cudaStream_t s = as_stream(stream);
  if (n <= 0) {  // no points: every slot gets index 0, as the CPU kernel's out[0] = 0
    const size_t bytes = sizeof(int) * static_cast<size_t>(b) * static_cast<size_t>(npoint);
    return static_cast<int>(cudaMemsetAsync(idx, 0, bytes, s));
  }
  const unsigned grid = static_cast<unsigned>(b);
  if (n <= kFpsThreads) {
    const int threads = (n + 31) / 32 * 32;
    fps_register_kernel<1><<<grid, threads, 0, s>>>(b, n, npoint, xyz, idx);
  } else if (n <= 2 * kFpsThreads) {
    fps_register_kernel<2><<<grid, kFpsThreads, 0, s>>>(b, n, npoint, xyz, idx);
  } else if (n <= 4 * kFpsThreads) {
    fps_register_kernel<4><<<grid, kFpsThreads, 0, s>>>(b, n, npoint, xyz, idx);
  } else if (n <= kFpsMaxPointsPerThread * kFpsThreads) {
    fps_register_kernel<kFpsMaxPointsPerThread>
        <<<grid, kFpsThreads, 0, s>>>(b, n, npoint, xyz, idx);
  } else {
    fps_global_kernel<<<grid, kFpsThreads, 0, s>>>(b, n, npoint, xyz, temp, idx);
  }
  return launch_status();
}

int jsnet_gather_point_cuda(int b, int n, int m, const float* xyz, const int* idx, float* out,
                            void* stream) {
  const int64_t total = static_cast<int64_t>(b) * m * 3;
  if (b <= 0 || m <= 0) return 0;
  const cudaStream_t s = as_stream(stream);
  const int64_t span = static_cast<int64_t>(b) * n * 3;
  if (fits_int32(total) && fits_int32(span)) {
    gather_point_kernel<int><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        static_cast<int>(total), n, m, xyz, idx, out);
  } else {
    gather_point_kernel<int64_t><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        total, n, m, xyz, idx, out);
  }
  return launch_status();
}

int jsnet_gather_point_grad_cuda(int b, int n, int m, const float* grad_out, const int* idx,
                                 float* grad_xyz, void* stream) {
  if (b <= 0 || n <= 0) return 0;
  const cudaStream_t s = as_stream(stream);
  const int64_t span = static_cast<int64_t>(b) * n * 3;
  const cudaError_t err =
      cudaMemsetAsync(grad_xyz, 0, sizeof(float) * static_cast<size_t>(span), s);
  if (err != cudaSuccess) return static_cast<int>(err);
  if (m <= 0) return launch_status();
  const int64_t total = static_cast<int64_t>(b) * m * 3;
  if (fits_int32(total) && fits_int32(span)) {
    gather_point_grad_kernel<int><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        static_cast<int>(total), n, m, grad_out, idx, grad_xyz);
  } else {
    gather_point_grad_kernel<int64_t><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        total, n, m, grad_out, idx, grad_xyz);
  }
  return launch_status();
}

int jsnet_query_ball_point_cuda(int b, int n, int m, float radius, int nsample, const float* xyz,
                                const float* new_xyz, int* idx, int* pts_cnt, void* stream) {
  if (b <= 0 || m <= 0) return 0;
  if (nsample < 0) nsample = 0;
  const float r2 = radius * radius;  // float32 product, as on the CPU
  const dim3 grid(static_cast<unsigned>((m + kScanThreads - 1) / kScanThreads),
                  static_cast<unsigned>(b < kMaxGridY ? b : kMaxGridY));
  query_ball_point_kernel<<<grid, kScanThreads, 0, as_stream(stream)>>>(b, n, m, r2, nsample, xyz,
                                                                       new_xyz, idx, pts_cnt);
  return launch_status();
}

int jsnet_group_point_cuda(int b, int n, int c, int m, int nsample, const float* points,
                           const int* idx, float* out, void* stream) {
  if (b <= 0 || c <= 0 || m <= 0 || nsample <= 0) return 0;
  const cudaStream_t s = as_stream(stream);
  const int64_t rows_per_batch = static_cast<int64_t>(m) * nsample;
  const int64_t total = static_cast<int64_t>(b) * rows_per_batch * c;
  const int64_t span = static_cast<int64_t>(b) * n * c;
  if (fits_int32(total) && fits_int32(span)) {
    group_point_kernel<int><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        static_cast<int>(total), n, c, static_cast<int>(rows_per_batch), points, idx, out);
  } else {
    group_point_kernel<int64_t><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        total, n, c, rows_per_batch, points, idx, out);
  }
  return launch_status();
}

int jsnet_group_point_grad_cuda(int b, int n, int c, int m, int nsample, const float* grad_out,
                                const int* idx, float* grad_points, void* stream) {
  if (b <= 0 || n <= 0 || c <= 0) return 0;
  const cudaStream_t s = as_stream(stream);
  const int64_t span = static_cast<int64_t>(b) * n * c;
  const cudaError_t err =
      cudaMemsetAsync(grad_points, 0, sizeof(float) * static_cast<size_t>(span), s);
  if (err != cudaSuccess) return static_cast<int>(err);
  if (m <= 0 || nsample <= 0) return launch_status();
  const int64_t rows_per_batch = static_cast<int64_t>(m) * nsample;
  const int64_t total = static_cast<int64_t>(b) * rows_per_batch * c;
  if (fits_int32(total) && fits_int32(span)) {
    group_point_grad_kernel<int><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        static_cast<int>(total), n, c, static_cast<int>(rows_per_batch), grad_out, idx,
        grad_points);
  } else {
    group_point_grad_kernel<int64_t><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        total, n, c, rows_per_batch, grad_out, idx, grad_points);
  }
  return launch_status();
}

int64_t jsnet_knn_point_cuda_workspace_floats(int b, int n, int m, int k) {
  (void)b;
  (void)n;
  (void)m;
  (void)k;
  return 0;  // the selection path sorts in shared memory or in place in the outputs
}

int jsnet_knn_point_cuda(int b, int n, int m, int k, const float* xyz, const float* new_xyz,
                         float* workspace, float* dist, int* idx, void* stream) {
  (void)workspace;
  if (b <= 0 || m <= 0 || k <= 0) return 0;
  if (k > n) return static_cast<int>(cudaErrorInvalidValue);  // contract: k <= N
  const cudaStream_t s = as_stream(stream);
  if (k <= 1) {
    launch_knn_scan<1>(b, n, m, k, xyz, new_xyz, dist, idx, s);
  } else if (k <= 2) {
    launch_knn_scan<2>(b, n, m, k, xyz, new_xyz, dist, idx, s);
  } else if (k <= 4) {
    launch_knn_scan<4>(b, n, m, k, xyz, new_xyz, dist, idx, s);
  } else if (k <= 8) {
    launch_knn_scan<8>(b, n, m, k, xyz, new_xyz, dist, idx, s);
  } else if (k <= 16) {
    launch_knn_scan<16>(b, n, m, k, xyz, new_xyz, dist, idx, s);
  } else if (k <= kKnnRegisterMaxK) {
    launch_knn_scan<kKnnRegisterMaxK>(b, n, m, k, xyz, new_xyz, dist, idx, s);
  } else {
    const int64_t total = static_cast<int64_t>(b) * m;
    const unsigned grid =
        static_cast<unsigned>(total < kSelectMaxBlocks ? total : kSelectMaxBlocks);
    const int use_shared = k <= kSelectSharedMaxK ? 1 : 0;
    const size_t shared_bytes =
        use_shared ? sizeof(unsigned long long) * static_cast<size_t>(k) : 0;
    knn_select_kernel<<<grid, kSelectThreads, shared_bytes, s>>>(b, n, m, k, xyz, new_xyz, dist,
                                                                  idx, use_shared);
  }
  return launch_status();
}

int jsnet_three_nn_cuda(int b, int n, int m, const float* xyz1, const float* xyz2, float* dist,
                        int* idx, void* stream) {
  if (b <= 0 || n <= 0) return 0;  // m == 0 still runs: every slot is (+inf, 0)
  const dim3 grid(static_cast<unsigned>((n + kScanThreads - 1) / kScanThreads),
                  static_cast<unsigned>(b < kMaxGridY ? b : kMaxGridY));
  nearest_scan_kernel<3><<<grid, kScanThreads, 0, as_stream(stream)>>>(
      b, n, m < 0 ? 0 : m, 3, xyz2, xyz1, dist, idx);
  return launch_status();
}

int jsnet_three_interpolate_cuda(int b, int m, int c, int n, const float* points, const int* idx,
                                 const float* weight, float* out, void* stream) {
  if (b <= 0 || c <= 0 || n <= 0) return 0;
  const cudaStream_t s = as_stream(stream);
  const int64_t total = static_cast<int64_t>(b) * n * c;
  const int64_t span = static_cast<int64_t>(b) * m * c;
  const int64_t idx_span = static_cast<int64_t>(b) * n * 3;
  if (fits_int32(total) && fits_int32(span) && fits_int32(idx_span)) {
    three_interpolate_kernel<int><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        static_cast<int>(total), m, c, n, points, idx, weight, out);
  } else {
    three_interpolate_kernel<int64_t><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        total, m, c, n, points, idx, weight, out);
  }
  return launch_status();
}

int jsnet_three_interpolate_grad_cuda(int b, int m, int c, int n, const float* grad_out,
                                      const int* idx, const float* weight, float* grad_points,
                                      void* stream) {
  if (b <= 0 || m <= 0 || c <= 0) return 0;
  const cudaStream_t s = as_stream(stream);
  const int64_t span = static_cast<int64_t>(b) * m * c;
  const cudaError_t err =
      cudaMemsetAsync(grad_points, 0, sizeof(float) * static_cast<size_t>(span), s);
  if (err != cudaSuccess) return static_cast<int>(err);
  if (n <= 0) return launch_status();
  const int64_t total = static_cast<int64_t>(b) * n * c;
  const int64_t idx_span = static_cast<int64_t>(b) * n * 3;
  if (fits_int32(total) && fits_int32(span) && fits_int32(idx_span)) {
    three_interpolate_grad_kernel<int><<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(
        static_cast<int>(total), m, c, n, grad_out, idx, weight, grad_points);
  } else {
    three_interpolate_grad_kernel<int64_t>
        <<<elementwise_blocks(total), kElementwiseThreads, 0, s>>>(total, m, c, n, grad_out, idx,
                                                                   weight, grad_points);
  }
  return launch_status();
}

int jsnet_gather_weight_net_sum_cuda(int b, int n, int c, int m, int nsample, int units,
                                     const float* points, const int* idx, const float* hidden,
                                     const float* kernel, const float* bias, float* out,
                                     void* stream) {
  const int64_t total = static_cast<int64_t>(b) * m * c;
  if (total <= 0) return 0;
  gather_weight_net_sum_kernel<<<elementwise_blocks(total), kElementwiseThreads, 0,
                                 as_stream(stream)>>>(total, n, c, m, nsample, units, points, idx,
                                                      hidden, kernel, bias, out);
  return launch_status();
}

int jsnet_gather_weight_net_sum_grad_cuda(int b, int n, int c, int m, int nsample, int units,
                                          const float* points, const int* idx,
                                          const float* hidden, const float* kernel,
                                          const float* bias, const float* grad_out,
                                          float* grad_points, float* grad_hidden,
                                          float* grad_kernel, float* grad_bias, void* stream) {
  const cudaStream_t s = as_stream(stream);
  const int64_t zeroed[3] = {static_cast<int64_t>(b) * n * c, static_cast<int64_t>(units) * c, c};
  float* outputs[3] = {grad_points, grad_kernel, grad_bias};
  for (int i = 0; i < 3; ++i) {
    if (zeroed[i] <= 0) continue;
    const cudaError_t err =
        cudaMemsetAsync(outputs[i], 0, sizeof(float) * static_cast<size_t>(zeroed[i]), s);
    if (err != cudaSuccess) return static_cast<int>(err);
  }
  const int64_t rows = static_cast<int64_t>(b) * m;
  const int64_t pairs = rows * nsample;
  if (pairs <= 0) return launch_status();
  if (c > 0) {
    weight_net_grad_points_kernel<<<elementwise_blocks(pairs * c), kElementwiseThreads, 0, s>>>(
        pairs * c, n, c, m, nsample, units, idx, hidden, kernel, bias, grad_out, grad_points);
    const int64_t blocks = (rows + kWeightNetRowsPerThread - 1) / kWeightNetRowsPerThread;
    const int64_t lines = blocks * (units + 1) * c;
    weight_net_grad_kernel_bias_kernel<<<elementwise_blocks(lines), kElementwiseThreads, 0, s>>>(
        lines, rows, n, c, m, nsample, units, points, idx, hidden, grad_out, grad_kernel,
        grad_bias);
  }
  if (units > 0) {
    weight_net_grad_hidden_kernel<<<elementwise_blocks(pairs * units), kElementwiseThreads, 0,
                                    s>>>(pairs * units, n, c, m, nsample, units, points, idx,
                                         kernel, grad_out, grad_hidden);
  }
  return launch_status();
}

int jsnet_first_non_finite_cuda(int64_t count, const float* values, int64_t* result,
                                void* stream) {
  const cudaStream_t s = as_stream(stream);
  const cudaError_t err = cudaMemsetAsync(result, 0xff, sizeof(int64_t), s);  // -1
  if (err != cudaSuccess) return static_cast<int>(err);
  if (count <= 0) return launch_status();
  first_non_finite_kernel<<<elementwise_blocks(count), kElementwiseThreads, 0, s>>>(
      count, values, reinterpret_cast<unsigned long long*>(result));
  return launch_status();
}

int jsnet_first_out_of_range_cuda(int64_t count, const int* values, int limit, int64_t* result,
                                  void* stream) {
  const cudaStream_t s = as_stream(stream);
  const cudaError_t err = cudaMemsetAsync(result, 0xff, sizeof(int64_t), s);  // -1
  if (err != cudaSuccess) return static_cast<int>(err);
  if (count <= 0) return launch_status();
  first_out_of_range_kernel<<<elementwise_blocks(count), kElementwiseThreads, 0, s>>>(
      count, values, limit, reinterpret_cast<unsigned long long*>(result));
  return launch_status();
}

}  // extern "C"
