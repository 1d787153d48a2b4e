// Framework-free kernels of the JSNet point ops.
//
// The TensorFlow op library (ops.cc) and the GPU harness (tf_ops/gpu_harness) both call these
// plain C functions, so the CPU and CUDA kernels can be compared without TensorFlow.
//
// Layouts are dense row-major float32 / int32:
//   xyz (B, N, 3), new_xyz (B, M, 3), points (B, N, C), idx (B, M, S), ...
// Shared semantics (identical on CPU and GPU):
//   * Squared distances are computed as dx*dx + dy*dy + dz*dz in float32, in that order,
//     with no fused multiply-add, so both back ends produce bit-identical distances.
//   * Every "nearest" search is exact; ties go to the lower index.
//   * farthest_point_sample starts at index 0; the next point is the first index holding the
//     largest distance to the selected set.
//   * query_ball_point takes the first nsample indices (in index order) with d2 < radius^2,
//     pads the remaining slots with the first hit; a query with no hit gets idx 0 in every slot
//     and pts_cnt 0.
//   * three_nn with fewer than 3 candidate points fills the missing slots with dist +inf, idx 0.
//
// CPU functions process the half-open range [begin, end) of work items (the unit is named per
// function) so that a caller can split the work over a thread pool. Batch-sized gradient
// functions own whole batch elements, so parallel calls never write the same memory.
//
// CUDA launchers take device pointers and a cudaStream_t (passed as void* so that this header
// needs no CUDA include), enqueue their work and return 0 or a cudaError_t value. They never
// allocate: scratch memory is passed in, sized by the matching *_workspace_floats function.
#ifndef JSNET_TF_OPS_POINT_KERNELS_H_
#define JSNET_TF_OPS_POINT_KERNELS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- CPU kernels (point_kernels.cc)

// Work items: batch elements. xyz (B, N, 3) -> idx (B, npoint).
void jsnet_farthest_point_sample_cpu(int64_t begin, int64_t end, int n, int npoint,
                                     const float* xyz, int* idx);

// Work items: output rows b * M + m. xyz (B, N, 3), idx (B, M) -> out (B, M, 3).
void jsnet_gather_point_cpu(int64_t begin, int64_t end, int n, int m, const float* xyz,
                            const int* idx, float* out);
// Work items: batch elements. grad_out (B, M, 3), idx (B, M) -> grad_xyz (B, N, 3) (overwritten).
void jsnet_gather_point_grad_cpu(int64_t begin, int64_t end, int n, int m,
                                 const float* grad_out, const int* idx, float* grad_xyz);

// Work items: queries b * M + m. xyz (B, N, 3), new_xyz (B, M, 3)
//   -> idx (B, M, nsample), pts_cnt (B, M).
void jsnet_query_ball_point_cpu(int64_t begin, int64_t end, int n, int m, float radius,
                                int nsample, const float* xyz, const float* new_xyz, int* idx,
                                int* pts_cnt);

// Work items: output rows (b * M + m) * nsample + s. points (B, N, C), idx (B, M, nsample)
//   -> out (B, M, nsample, C).
void jsnet_group_point_cpu(int64_t begin, int64_t end, int n, int c, int m, int nsample,
                           const float* points, const int* idx, float* out);
// Work items: batch elements. grad_out (B, M, nsample, C) -> grad_points (B, N, C) (overwritten).
void jsnet_group_point_grad_cpu(int64_t begin, int64_t end, int n, int c, int m, int nsample,
                                const float* grad_out, const int* idx, float* grad_points);

// Work items: queries b * M + m. xyz (B, N, 3), new_xyz (B, M, 3)
//   -> dist (B, M, k) squared distances ascending, idx (B, M, k). Requires k <= N.
void jsnet_knn_point_cpu(int64_t begin, int64_t end, int n, int m, int k, const float* xyz,
                         const float* new_xyz, float* dist, int* idx);

// Work items: queries b * N + i. xyz1 (B, N, 3), xyz2 (B, M, 3)
//   -> dist (B, N, 3) squared distances ascending, idx (B, N, 3).
void jsnet_three_nn_cpu(int64_t begin, int64_t end, int n, int m, const float* xyz1,
                        const float* xyz2, float* dist, int* idx);

// Work items: output rows b * N + i. points (B, M, C), idx (B, N, 3), weight (B, N, 3)
//   -> out (B, N, C).
void jsnet_three_interpolate_cpu(int64_t begin, int64_t end, int m, int c, int n,
                                 const float* points, const int* idx, const float* weight,
                                 float* out);
// Work items: batch elements. grad_out (B, N, C) -> grad_points (B, M, C) (overwritten).
void jsnet_three_interpolate_grad_cpu(int64_t begin, int64_t end, int m, int c, int n,
                                      const float* grad_out, const int* idx,
                                      const float* weight, float* grad_points);

// gather_weight_net_sum: a weight net's last linear map, a gather, a channel-wise product and a
// sum over the neighbours in one op, the channel weights never stored:
//   out[b, m, ch] = sum_s points[b, idx[b, m, s], ch] * w[b, m, s, ch],
//   w[b, m, s, ch] = bias[ch] + sum_h hidden[b, m, s, h] * kernel[h, ch].
// points (B, N, C), idx (B, M, nsample), hidden (B, M, nsample, units), kernel (units, C),
// bias (C) -> out (B, M, C). Sums in float32 with fused multiply-adds where the CPU has them, in
// an order of the kernel's choosing (CPU and CUDA agree to rounding, not to the bit).
//
// Work items: output rows b * M + m.
void jsnet_gather_weight_net_sum_cpu(int64_t begin, int64_t end, int n, int c, int m,
                                     int nsample, int units, const float* points, const int* idx,
                                     const float* hidden, const float* kernel, const float* bias,
                                     float* out);
// The gradient, given grad_out (B, M, C), in three calls:
// 1. work items: batch elements. grad_points (B, N, C) overwritten with the scatter-add of
//    grad_out * w into idx (w made again).
void jsnet_gather_weight_net_sum_grad_points_cpu(int64_t begin, int64_t end, int n, int c, int m,
                                                 int nsample, int units, const float* grad_out,
                                                 const int* idx, const float* hidden,
                                                 const float* kernel, const float* bias,
                                                 float* grad_points);
// 2. work items: the jsnet_gather_weight_net_sum_grad_blocks_cpu(b, m) blocks of consecutive rows.
//    With u[s, ch] = grad_out[b, m, ch] * points[b, idx[b, m, s], ch]: grad_hidden (B, M, nsample,
//    units) = u @ kernel^T per row, and per block the sums of hidden^T @ u and of u over its rows
//    into the workspace (jsnet_gather_weight_net_sum_grad_workspace_floats_cpu floats).
int64_t jsnet_gather_weight_net_sum_grad_blocks_cpu(int b, int m);
int64_t jsnet_gather_weight_net_sum_grad_workspace_floats_cpu(int b, int m, int c, int units);
void jsnet_gather_weight_net_sum_grad_weight_net_cpu(int64_t begin, int64_t end, int b, int n,
                                                     int c, int m, int nsample, int units,
                                                     const float* points, const int* idx,
                                                     const float* hidden, const float* kernel,
                                                     const float* grad_out, float* grad_hidden,
                                                     float* workspace);
// 3. work items: units + 1 output rows (the kernel's, then the bias). grad_kernel (units, C) and
//    grad_bias (C), the blocks' sums added in block order (the same for any number of threads).
void jsnet_gather_weight_net_sum_grad_reduce_cpu(int64_t begin, int64_t end, int b, int c, int m,
                                                 int units, const float* workspace,
                                                 float* grad_kernel, float* grad_bias);

// Validation helpers used by every op before it runs (work items: array elements).
// Return the position of the first offending element, or -1 when all are fine.
int64_t jsnet_first_non_finite_cpu(int64_t count, const float* values);
int64_t jsnet_first_out_of_range_cpu(int64_t count, const int* values, int limit);

// ---------------------------------------------------------------- CUDA launchers (point_kernels.cu)

// temp: workspace of B * N floats.
int jsnet_farthest_point_sample_cuda(int b, int n, int npoint, const float* xyz, float* temp,
                                     int* idx, void* stream);
int jsnet_gather_point_cuda(int b, int n, int m, const float* xyz, const int* idx, float* out,
                            void* stream);
// grad_xyz is zeroed by the launcher, then accumulated.
int jsnet_gather_point_grad_cuda(int b, int n, int m, const float* grad_out, const int* idx,
                                 float* grad_xyz, void* stream);
int jsnet_query_ball_point_cuda(int b, int n, int m, float radius, int nsample, const float* xyz,
                                const float* new_xyz, int* idx, int* pts_cnt, void* stream);
int jsnet_group_point_cuda(int b, int n, int c, int m, int nsample, const float* points,
                           const int* idx, float* out, void* stream);
// grad_points is zeroed by the launcher, then accumulated.
int jsnet_group_point_grad_cuda(int b, int n, int c, int m, int nsample, const float* grad_out,
                                const int* idx, float* grad_points, void* stream);
// workspace: jsnet_knn_point_cuda_workspace_floats(b, n, m, k) floats (may be 0 -> pass NULL).
int64_t jsnet_knn_point_cuda_workspace_floats(int b, int n, int m, int k);
int jsnet_knn_point_cuda(int b, int n, int m, int k, const float* xyz, const float* new_xyz,
                         float* workspace, float* dist, int* idx, void* stream);
int jsnet_three_nn_cuda(int b, int n, int m, const float* xyz1, const float* xyz2, float* dist,
                        int* idx, void* stream);
int jsnet_three_interpolate_cuda(int b, int m, int c, int n, const float* points, const int* idx,
                                 const float* weight, float* out, void* stream);
// grad_points is zeroed by the launcher, then accumulated.
int jsnet_three_interpolate_grad_cuda(int b, int m, int c, int n, const float* grad_out,
                                      const int* idx, const float* weight, float* grad_points,
                                      void* stream);
int jsnet_gather_weight_net_sum_cuda(int b, int n, int c, int m, int nsample, int units,
                                     const float* points, const int* idx, const float* hidden,
                                     const float* kernel, const float* bias, float* out,
                                     void* stream);
// All four gradients: grad_hidden written, the others zeroed by the launcher, then accumulated
// with atomics.
int jsnet_gather_weight_net_sum_grad_cuda(int b, int n, int c, int m, int nsample, int units,
                                          const float* points, const int* idx,
                                          const float* hidden, const float* kernel,
                                          const float* bias, const float* grad_out,
                                          float* grad_points, float* grad_hidden,
                                          float* grad_kernel, float* grad_bias, void* stream);
// Device-side validation: writes to *result (device int64) the first offending position or -1.
int jsnet_first_non_finite_cuda(int64_t count, const float* values, int64_t* result,
                                void* stream);
int jsnet_first_out_of_range_cuda(int64_t count, const int* values, int limit, int64_t* result,
                                  void* stream);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // JSNET_TF_OPS_POINT_KERNELS_H_
