// TensorFlow registrations of the JSNet point ops: op definitions with shape functions, CPU
// kernels sharded over TF's intra-op thread pool and, when built with GOOGLE_CUDA, GPU kernels.
// The arithmetic lives in point_kernels.{cc,cu}; this file validates inputs and dispatches.
//
// Op names carry the `Jsnet` prefix so they never clash with another library's point ops.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#include <cstdint>
#include <functional>
#include <string>

#include "batch_norm_kernels.h"
#include "point_kernels.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/lib/core/threadpool.h"

#if GOOGLE_CUDA
#include <cuda_runtime_api.h>

#include "tensorflow/core/util/determinism.h"
#endif

namespace jsnet {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
using CPUDevice = Eigen::ThreadPoolDevice;
using Status = absl::Status;

namespace errors = ::tensorflow::errors;

// ------------------------------------------------------------------------------ shape functions

// Requires `input` to be (batch, points, channels) with channels == `channels` when >= 0.
Status PointsShape(InferenceContext* c, int input, int channels, ShapeHandle* out) {
  TF_RETURN_IF_ERROR(c->WithRank(c->input(input), 3, out));
  if (channels >= 0) {
    DimensionHandle unused;
    TF_RETURN_IF_ERROR(c->WithValue(c->Dim(*out, 2), channels, &unused));
  }
  return absl::OkStatus();
}

// Merges the batch dimension of two shapes.
Status SameBatch(InferenceContext* c, ShapeHandle a, ShapeHandle b, DimensionHandle* batch) {
  return c->Merge(c->Dim(a, 0), c->Dim(b, 0), batch);
}

// Inputs 0 and 1 are point clouds (batch, points, 3) of one batch.
Status TwoClouds(InferenceContext* c, ShapeHandle* a, ShapeHandle* b, DimensionHandle* batch) {
  TF_RETURN_IF_ERROR(PointsShape(c, 0, 3, a));
  TF_RETURN_IF_ERROR(PointsShape(c, 1, 3, b));
  return SameBatch(c, *a, *b, batch);
}

// ------------------------------------------------------------------------------ op definitions

REGISTER_OP("JsnetFarthestPointSample")
    .Attr("npoint: int")
    .Input("xyz: float32")
    .Output("idx: int32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle xyz;
      TF_RETURN_IF_ERROR(PointsShape(c, 0, 3, &xyz));
      int npoint;
      TF_RETURN_IF_ERROR(c->GetAttr("npoint", &npoint));
      c->set_output(0, c->MakeShape({c->Dim(xyz, 0), c->MakeDim(npoint)}));
      return absl::OkStatus();
    })
    .Doc("Farthest point sampling from index 0: idx (B, npoint) of xyz (B, N, 3).");

REGISTER_OP("JsnetGatherPoint")
    .Input("xyz: float32")
    .Input("idx: int32")
    .Output("out: float32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle xyz, idx;
      TF_RETURN_IF_ERROR(PointsShape(c, 0, 3, &xyz));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &idx));
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(SameBatch(c, xyz, idx, &batch));
      c->set_output(0, c->MakeShape({batch, c->Dim(idx, 1), c->MakeDim(3)}));
      return absl::OkStatus();
    })
    .Doc("out[b, m] = xyz[b, idx[b, m]].");

REGISTER_OP("JsnetGatherPointGrad")
    .Input("xyz: float32")
    .Input("idx: int32")
    .Input("grad_out: float32")
    .Output("grad_xyz: float32")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("JsnetQueryBallPoint")
    .Attr("radius: float")
    .Attr("nsample: int")
    .Input("xyz: float32")
    .Input("new_xyz: float32")
    .Output("idx: int32")
    .Output("pts_cnt: int32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle xyz, new_xyz;
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(TwoClouds(c, &xyz, &new_xyz, &batch));
      int nsample;
      TF_RETURN_IF_ERROR(c->GetAttr("nsample", &nsample));
      c->set_output(0, c->MakeShape({batch, c->Dim(new_xyz, 1), c->MakeDim(nsample)}));
      c->set_output(1, c->MakeShape({batch, c->Dim(new_xyz, 1)}));
      return absl::OkStatus();
    })
    .Doc("First nsample points (index order) within radius of each new_xyz point.");

REGISTER_OP("JsnetGroupPoint")
    .Input("points: float32")
    .Input("idx: int32")
    .Output("out: float32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle points, idx;
      TF_RETURN_IF_ERROR(PointsShape(c, 0, -1, &points));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &idx));
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(SameBatch(c, points, idx, &batch));
      c->set_output(0, c->MakeShape({batch, c->Dim(idx, 1), c->Dim(idx, 2), c->Dim(points, 2)}));
      return absl::OkStatus();
    })
    .Doc("out[b, m, s] = points[b, idx[b, m, s]].");

REGISTER_OP("JsnetGroupPointGrad")
    .Input("points: float32")
    .Input("idx: int32")
    .Input("grad_out: float32")
    .Output("grad_points: float32")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("JsnetKnnPoint")
    .Attr("k: int")
    .Input("xyz: float32")
    .Input("new_xyz: float32")
    .Output("dist: float32")
    .Output("idx: int32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle xyz, new_xyz;
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(TwoClouds(c, &xyz, &new_xyz, &batch));
      int k;
      TF_RETURN_IF_ERROR(c->GetAttr("k", &k));
      ShapeHandle out = c->MakeShape({batch, c->Dim(new_xyz, 1), c->MakeDim(k)});
      c->set_output(0, out);
      c->set_output(1, out);
      return absl::OkStatus();
    })
    .Doc("Exact k nearest xyz points of each new_xyz point: squared distances ascending.");

REGISTER_OP("JsnetThreeNN")
    .Input("xyz1: float32")
    .Input("xyz2: float32")
    .Output("dist: float32")
    .Output("idx: int32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle xyz1, xyz2;
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(TwoClouds(c, &xyz1, &xyz2, &batch));
      ShapeHandle out = c->MakeShape({batch, c->Dim(xyz1, 1), c->MakeDim(3)});
      c->set_output(0, out);
      c->set_output(1, out);
      return absl::OkStatus();
    })
    .Doc("Three nearest xyz2 points of each xyz1 point: squared distances ascending.");

REGISTER_OP("JsnetThreeInterpolate")
    .Input("points: float32")
    .Input("idx: int32")
    .Input("weight: float32")
    .Output("out: float32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle points, idx, weight;
      TF_RETURN_IF_ERROR(PointsShape(c, 0, -1, &points));
      TF_RETURN_IF_ERROR(PointsShape(c, 1, 3, &idx));
      TF_RETURN_IF_ERROR(PointsShape(c, 2, 3, &weight));
      TF_RETURN_IF_ERROR(c->Merge(idx, weight, &idx));
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(SameBatch(c, points, idx, &batch));
      c->set_output(0, c->MakeShape({batch, c->Dim(idx, 1), c->Dim(points, 2)}));
      return absl::OkStatus();
    })
    .Doc("out[b, n] = sum_j weight[b, n, j] * points[b, idx[b, n, j]].");

REGISTER_OP("JsnetThreeInterpolateGrad")
    .Input("points: float32")
    .Input("idx: int32")
    .Input("weight: float32")
    .Input("grad_out: float32")
    .Output("grad_points: float32")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("JsnetGatherWeightNetSum")
    .Input("points: float32")
    .Input("idx: int32")
    .Input("hidden: float32")
    .Input("kernel: float32")
    .Input("bias: float32")
    .Output("out: float32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle points, idx, hidden, kernel, bias;
      TF_RETURN_IF_ERROR(PointsShape(c, 0, -1, &points));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &idx));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &hidden));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &kernel));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 1, &bias));
      ShapeHandle rows = c->MakeShape({c->Dim(idx, 0), c->Dim(idx, 1), c->Dim(idx, 2), c->Dim(kernel, 0)});
      TF_RETURN_IF_ERROR(c->Merge(hidden, rows, &hidden));
      DimensionHandle channels;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(points, 2), c->Dim(kernel, 1), &channels));
      TF_RETURN_IF_ERROR(c->Merge(channels, c->Dim(bias, 0), &channels));
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(SameBatch(c, points, hidden, &batch));
      c->set_output(0, c->MakeShape({batch, c->Dim(hidden, 1), channels}));
      return absl::OkStatus();
    })
    .Doc("out[b, m] = sum_s points[b, idx[b, m, s]] * (bias + hidden[b, m, s] @ kernel), the "
         "products channel-wise.");

REGISTER_OP("JsnetGatherWeightNetSumGrad")
    .Input("points: float32")
    .Input("idx: int32")
    .Input("hidden: float32")
    .Input("kernel: float32")
    .Input("bias: float32")
    .Input("grad_out: float32")
    .Output("grad_points: float32")
    .Output("grad_hidden: float32")
    .Output("grad_kernel: float32")
    .Output("grad_bias: float32")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(3));
      c->set_output(3, c->input(4));
      return absl::OkStatus();
    });

// ------------------------------------------------------------------------------ validation

std::string ShapeString(const Tensor& t) { return t.shape().DebugString(); }

// `t` must be (batch, points, channels), with channels == `channels` when >= 0.
Status CheckPoints(const std::string& op, const char* name, const Tensor& t, int channels) {
  if (t.dims() != 3 || (channels >= 0 && t.dim_size(2) != channels)) {
    const std::string want =
        channels >= 0 ? "(batch, points, " + std::to_string(channels) + ")"
                      : std::string("(batch, points, channels)");
    return errors::InvalidArgument(op, ": ", name, " must have shape ", want, ", got ",
                                   ShapeString(t));
  }
  return absl::OkStatus();
}

Status CheckRank(const std::string& op, const char* name, const Tensor& t, int rank,
                 const char* layout) {
  if (t.dims() != rank) {
    return errors::InvalidArgument(op, ": ", name, " must have shape ", layout, ", got ",
                                   ShapeString(t));
  }
  return absl::OkStatus();
}

Status CheckSameBatch(const std::string& op, const char* name_a, const Tensor& a,
                      const char* name_b, const Tensor& b) {
  if (a.dim_size(0) != b.dim_size(0)) {
    return errors::InvalidArgument(op, ": batch sizes differ: ", name_a, " ", ShapeString(a),
                                   " vs ", name_b, " ", ShapeString(b));
  }
  return absl::OkStatus();
}

Status CheckSameShape(const std::string& op, const char* name_a, const Tensor& a,
                      const char* name_b, const Tensor& b) {
  if (a.shape() != b.shape()) {
    return errors::InvalidArgument(op, ": ", name_a, " ", ShapeString(a), " and ", name_b, " ",
                                   ShapeString(b), " must have the same shape");
  }
  return absl::OkStatus();
}

// The kernels take int32 sizes and index one batch element with int32 offsets.
Status CheckIntSizes(const std::string& op, const Tensor& t) {
  for (int d = 0; d < t.dims(); ++d) {
    if (t.dim_size(d) > INT32_MAX) {
      return errors::InvalidArgument(op, ": dimension ", d, " of ", ShapeString(t),
                                     " exceeds 2^31 - 1");
    }
  }
  if (t.dims() > 0 && t.dim_size(0) > 0 && t.NumElements() / t.dim_size(0) > INT32_MAX) {
    return errors::InvalidArgument(op, ": one batch element of ", ShapeString(t),
                                   " holds more than 2^31 - 1 values");
  }
  return absl::OkStatus();
}

// Position (batch, point, coordinate) of flat element `pos` of a (B, N, 3) tensor.
std::string PointPosition(int64_t pos, const Tensor& t) {
  const int64_t n = t.dim_size(1), c = t.dim_size(2);
  return "batch " + std::to_string(pos / (n * c)) + ", point " + std::to_string(pos / c % n);
}

// ------------------------------------------------------------------------------ back ends

// Each back end runs the framework-free kernels on its device and can scan inputs for the
// content errors (non-finite coordinates, indices out of range) that shapes cannot reveal.
template <typename Device>
struct Backend;

template <>
struct Backend<CPUDevice> {
  // Farthest point sampling calls of at most this many distance evaluations (B * N * npoint;
  // 256 -> 64 at batch 8) run on the calling thread.
  static constexpr int64_t kInlineFpsEvaluations = int64_t{1} << 17;

  // Work of at most this many cycles (items * cost) runs on the calling thread: waking the pool
  // costs more (measured: three_nn 64 queries in 32 points at batch 8).
  static constexpr int64_t kInlineCycles = int64_t{1} << 17;

  // Splits `items` work items over the intra-op pool; cost is in cycles per item.
  static void Parallel(OpKernelContext* ctx, int64_t items, int64_t cost,
                       const std::function<void(int64_t, int64_t)>& fn) {
    if (items <= 0) return;
    if (items * cost <= kInlineCycles) {
      fn(0, items);
      return;
    }
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    pool->ParallelFor(items, cost, fn);
  }

  static Status FirstNonFinite(OpKernelContext*, const Tensor& t, int64_t* pos) {
    *pos = jsnet_first_non_finite_cpu(t.NumElements(), t.flat<float>().data());
    return absl::OkStatus();
  }

  static Status FirstOutOfRange(OpKernelContext*, const Tensor& t, int limit, int64_t* pos) {
    *pos = jsnet_first_out_of_range_cpu(t.NumElements(), t.flat<int>().data(), limit);
    return absl::OkStatus();
  }

  static Status FarthestPointSample(OpKernelContext* ctx, int b, int n, int npoint,
                                    const float* xyz, int* idx) {
    const auto run = [&](int64_t s, int64_t e) { jsnet_farthest_point_sample_cpu(s, e, n, npoint, xyz, idx); };
    // Small calls (the coarse levels) run inline: handing them to the pool costs more than it saves.
    if (int64_t{b} * n * npoint <= kInlineFpsEvaluations) {
      run(0, b);
    } else {
      Parallel(ctx, b, int64_t{8} * n * npoint, run);
    }
    return absl::OkStatus();
  }

  static Status GatherPoint(OpKernelContext* ctx, int b, int n, int m, const float* xyz,
                            const int* idx, float* out) {
    Parallel(ctx, int64_t{b} * m, 8, [&](int64_t s, int64_t e) {
      jsnet_gather_point_cpu(s, e, n, m, xyz, idx, out);
    });
    return absl::OkStatus();
  }

  static Status GatherPointGrad(OpKernelContext* ctx, int b, int n, int m, const float* grad_out,
                                const int* idx, float* grad_xyz) {
    Parallel(ctx, b, int64_t{4} * (n + m), [&](int64_t s, int64_t e) {
      jsnet_gather_point_grad_cpu(s, e, n, m, grad_out, idx, grad_xyz);
    });
    return absl::OkStatus();
  }

  static Status QueryBallPoint(OpKernelContext* ctx, int b, int n, int m, float radius,
                               int nsample, const float* xyz, const float* new_xyz, int* idx,
                               int* pts_cnt) {
    Parallel(ctx, int64_t{b} * m, int64_t{4} * n, [&](int64_t s, int64_t e) {
      jsnet_query_ball_point_cpu(s, e, n, m, radius, nsample, xyz, new_xyz, idx, pts_cnt);
    });
    return absl::OkStatus();
  }

  static Status GroupPoint(OpKernelContext* ctx, int b, int n, int c, int m, int nsample,
                           const float* points, const int* idx, float* out) {
    Parallel(ctx, int64_t{b} * m * nsample, 2 * c + 4, [&](int64_t s, int64_t e) {
      jsnet_group_point_cpu(s, e, n, c, m, nsample, points, idx, out);
    });
    return absl::OkStatus();
  }

  static Status GroupPointGrad(OpKernelContext* ctx, int b, int n, int c, int m, int nsample,
                               const float* grad_out, const int* idx, float* grad_points) {
    Parallel(ctx, b, int64_t{2} * c * (n + int64_t{m} * nsample), [&](int64_t s, int64_t e) {
      jsnet_group_point_grad_cpu(s, e, n, c, m, nsample, grad_out, idx, grad_points);
    });
    return absl::OkStatus();
  }

  static Status KnnPoint(OpKernelContext* ctx, int b, int n, int m, int k, const float* xyz,
                         const float* new_xyz, float* workspace, float* dist, int* idx) {
    Parallel(ctx, int64_t{b} * m, int64_t{6} * n, [&](int64_t s, int64_t e) {
      jsnet_knn_point_cpu(s, e, n, m, k, xyz, new_xyz, dist, idx);
    });
    return absl::OkStatus();
  }

  static Status ThreeNN(OpKernelContext* ctx, int b, int n, int m, const float* xyz1,
                        const float* xyz2, float* dist, int* idx) {
    Parallel(ctx, int64_t{b} * n, int64_t{6} * m, [&](int64_t s, int64_t e) {
      jsnet_three_nn_cpu(s, e, n, m, xyz1, xyz2, dist, idx);
    });
    return absl::OkStatus();
  }

  static Status ThreeInterpolate(OpKernelContext* ctx, int b, int m, int c, int n,
                                 const float* points, const int* idx, const float* weight,
                                 float* out) {
    Parallel(ctx, int64_t{b} * n, int64_t{6} * c, [&](int64_t s, int64_t e) {
      jsnet_three_interpolate_cpu(s, e, m, c, n, points, idx, weight, out);
    });
    return absl::OkStatus();
  }

  static Status ThreeInterpolateGrad(OpKernelContext* ctx, int b, int m, int c, int n,
                                     const float* grad_out, const int* idx, const float* weight,
                                     float* grad_points) {
    Parallel(ctx, b, int64_t{6} * c * (n + m), [&](int64_t s, int64_t e) {
      jsnet_three_interpolate_grad_cpu(s, e, m, c, n, grad_out, idx, weight, grad_points);
    });
    return absl::OkStatus();
  }

  static Status GatherWeightNetSum(OpKernelContext* ctx, int b, int n, int c, int m,
                                   int nsample, int units, const float* points, const int* idx,
                                   const float* hidden, const float* kernel, const float* bias,
                                   float* out) {
    const int64_t row_cycles = int64_t{nsample} * (units + 1) * c / 4 + 4;
    Parallel(ctx, int64_t{b} * m, row_cycles, [&](int64_t s, int64_t e) {
      jsnet_gather_weight_net_sum_cpu(s, e, n, c, m, nsample, units, points, idx, hidden, kernel,
                                      bias, out);
    });
    return absl::OkStatus();
  }

  static Status GatherWeightNetSumGrad(OpKernelContext* ctx, int b, int n, int c, int m,
                                       int nsample, int units, const float* points,
                                       const int* idx, const float* hidden, const float* kernel,
                                       const float* bias, const float* grad_out,
                                       float* grad_points, float* grad_hidden,
                                       float* grad_kernel, float* grad_bias) {
    const int64_t row_cycles = int64_t{nsample} * (units + 1) * c / 4 + 4;
    Parallel(ctx, b, int64_t{m} * row_cycles + int64_t{n} * c, [&](int64_t s, int64_t e) {
      jsnet_gather_weight_net_sum_grad_points_cpu(s, e, n, c, m, nsample, units, grad_out, idx,
                                                  hidden, kernel, bias, grad_points);
    });
    Tensor workspace;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(
        ::tensorflow::DT_FLOAT,
        TensorShape({jsnet_gather_weight_net_sum_grad_workspace_floats_cpu(b, m, c, units)}),
        &workspace));
    float* partials = workspace.flat<float>().data();
    const int64_t blocks = jsnet_gather_weight_net_sum_grad_blocks_cpu(b, m);
    const int64_t rows_per_block = blocks > 0 ? (int64_t{b} * m + blocks - 1) / blocks : 0;
    Parallel(ctx, blocks, 2 * rows_per_block * row_cycles, [&](int64_t s, int64_t e) {
      jsnet_gather_weight_net_sum_grad_weight_net_cpu(s, e, b, n, c, m, nsample, units, points,
                                                      idx, hidden, kernel, grad_out, grad_hidden,
                                                      partials);
    });
    Parallel(ctx, units + 1, blocks * c + 4, [&](int64_t s, int64_t e) {
      jsnet_gather_weight_net_sum_grad_reduce_cpu(s, e, b, c, m, units, partials, grad_kernel,
                                                  grad_bias);
    });
    return absl::OkStatus();
  }

  static int64_t KnnWorkspaceFloats(int, int, int, int) { return 0; }
};

#if GOOGLE_CUDA
using GPUDevice = Eigen::GpuDevice;

template <>
struct Backend<GPUDevice> {
  static void* Stream(OpKernelContext* ctx) {
    return reinterpret_cast<void*>(ctx->eigen_device<GPUDevice>().stream());
  }

  static Status Check(int code, const char* what) {
    if (code != 0) {
      return errors::Internal("CUDA launch of ", what, " failed: ",
                              cudaGetErrorString(static_cast<cudaError_t>(code)));
    }
    return absl::OkStatus();
  }

  // Runs a device scan that writes one int64 position, then reads it back to the host.
  template <typename Scan>
  static Status ScanToHost(OpKernelContext* ctx, const char* what, Scan scan, int64_t* pos) {
    Tensor result;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(::tensorflow::DT_INT64, TensorShape({1}), &result));
    int64_t* device_pos = result.flat<int64_t>().data();
    void* stream = Stream(ctx);
    TF_RETURN_IF_ERROR(Check(scan(device_pos, stream), what));
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    TF_RETURN_IF_ERROR(Check(cudaMemcpyAsync(pos, device_pos, sizeof(int64_t),
                                             cudaMemcpyDeviceToHost, s),
                             "validation read-back"));
    return Check(cudaStreamSynchronize(s), "validation read-back");
  }

  static Status FirstNonFinite(OpKernelContext* ctx, const Tensor& t, int64_t* pos) {
    const float* values = t.flat<float>().data();
    const int64_t count = t.NumElements();
    return ScanToHost(
        ctx, "finite check",
        [&](int64_t* out, void* s) { return jsnet_first_non_finite_cuda(count, values, out, s); },
        pos);
  }

  static Status FirstOutOfRange(OpKernelContext* ctx, const Tensor& t, int limit, int64_t* pos) {
    const int* values = t.flat<int>().data();
    const int64_t count = t.NumElements();
    return ScanToHost(
        ctx, "index range check",
        [&](int64_t* out, void* s) {
          return jsnet_first_out_of_range_cuda(count, values, limit, out, s);
        },
        pos);
  }

  static Status FarthestPointSample(OpKernelContext* ctx, int b, int n, int npoint,
                                    const float* xyz, int* idx) {
    Tensor temp;
    TF_RETURN_IF_ERROR(
        ctx->allocate_temp(::tensorflow::DT_FLOAT, TensorShape({int64_t{b} * n}), &temp));
    return Check(jsnet_farthest_point_sample_cuda(b, n, npoint, xyz, temp.flat<float>().data(),
                                                  idx, Stream(ctx)),
                 "farthest_point_sample");
  }

  static Status GatherPoint(OpKernelContext* ctx, int b, int n, int m, const float* xyz,
                            const int* idx, float* out) {
    return Check(jsnet_gather_point_cuda(b, n, m, xyz, idx, out, Stream(ctx)), "gather_point");
  }

  // The GPU gradients accumulate with atomics, so their float sums are not reproducible.
  static Status RefuseUnderDeterminism(const char* what) {
    if (::tensorflow::OpDeterminismRequired()) {
      return errors::Unimplemented(
          "A deterministic GPU implementation of ", what,
          " is not available (it accumulates with atomics); run it on the CPU or disable "
          "tf.config.experimental.enable_op_determinism");
    }
    return absl::OkStatus();
  }

  static Status GatherPointGrad(OpKernelContext* ctx, int b, int n, int m, const float* grad_out,
                                const int* idx, float* grad_xyz) {
    TF_RETURN_IF_ERROR(RefuseUnderDeterminism("the gather_point gradient"));
    return Check(jsnet_gather_point_grad_cuda(b, n, m, grad_out, idx, grad_xyz, Stream(ctx)),
                 "gather_point_grad");
  }

  static Status QueryBallPoint(OpKernelContext* ctx, int b, int n, int m, float radius,
                               int nsample, const float* xyz, const float* new_xyz, int* idx,
                               int* pts_cnt) {
    return Check(jsnet_query_ball_point_cuda(b, n, m, radius, nsample, xyz, new_xyz, idx,
                                             pts_cnt, Stream(ctx)),
                 "query_ball_point");
  }

  static Status GroupPoint(OpKernelContext* ctx, int b, int n, int c, int m, int nsample,
                           const float* points, const int* idx, float* out) {
    return Check(jsnet_group_point_cuda(b, n, c, m, nsample, points, idx, out, Stream(ctx)),
                 "group_point");
  }

  static Status GroupPointGrad(OpKernelContext* ctx, int b, int n, int c, int m, int nsample,
                               const float* grad_out, const int* idx, float* grad_points) {
    TF_RETURN_IF_ERROR(RefuseUnderDeterminism("the group_point gradient"));
    return Check(jsnet_group_point_grad_cuda(b, n, c, m, nsample, grad_out, idx, grad_points,
                                             Stream(ctx)),
                 "group_point_grad");
  }

  static Status KnnPoint(OpKernelContext* ctx, int b, int n, int m, int k, const float* xyz,
                         const float* new_xyz, float* workspace, float* dist, int* idx) {
    return Check(jsnet_knn_point_cuda(b, n, m, k, xyz, new_xyz, workspace, dist, idx,
                                      Stream(ctx)),
                 "knn_point");
  }

  static Status ThreeNN(OpKernelContext* ctx, int b, int n, int m, const float* xyz1,
                        const float* xyz2, float* dist, int* idx) {
    return Check(jsnet_three_nn_cuda(b, n, m, xyz1, xyz2, dist, idx, Stream(ctx)), "three_nn");
  }

  static Status ThreeInterpolate(OpKernelContext* ctx, int b, int m, int c, int n,
                                 const float* points, const int* idx, const float* weight,
                                 float* out) {
    return Check(
        jsnet_three_interpolate_cuda(b, m, c, n, points, idx, weight, out, Stream(ctx)),
        "three_interpolate");
  }

  static Status ThreeInterpolateGrad(OpKernelContext* ctx, int b, int m, int c, int n,
                                     const float* grad_out, const int* idx, const float* weight,
                                     float* grad_points) {
    TF_RETURN_IF_ERROR(RefuseUnderDeterminism("the three_interpolate gradient"));
    return Check(jsnet_three_interpolate_grad_cuda(b, m, c, n, grad_out, idx, weight,
                                                   grad_points, Stream(ctx)),
                 "three_interpolate_grad");
  }

  static Status GatherWeightNetSum(OpKernelContext* ctx, int b, int n, int c, int m,
                                   int nsample, int units, const float* points, const int* idx,
                                   const float* hidden, const float* kernel, const float* bias,
                                   float* out) {
    return Check(jsnet_gather_weight_net_sum_cuda(b, n, c, m, nsample, units, points, idx, hidden,
                                                  kernel, bias, out, Stream(ctx)),
                 "gather_weight_net_sum");
  }

  static Status GatherWeightNetSumGrad(OpKernelContext* ctx, int b, int n, int c, int m,
                                       int nsample, int units, const float* points,
                                       const int* idx, const float* hidden, const float* kernel,
                                       const float* bias, const float* grad_out,
                                       float* grad_points, float* grad_hidden,
                                       float* grad_kernel, float* grad_bias) {
    TF_RETURN_IF_ERROR(RefuseUnderDeterminism("the gather_weight_net_sum gradient"));
    return Check(jsnet_gather_weight_net_sum_grad_cuda(b, n, c, m, nsample, units, points, idx,
                                                       hidden, kernel, bias, grad_out,
                                                       grad_points, grad_hidden, grad_kernel,
                                                       grad_bias, Stream(ctx)),
                 "gather_weight_net_sum_grad");
  }

  static int64_t KnnWorkspaceFloats(int b, int n, int m, int k) {
    return jsnet_knn_point_cuda_workspace_floats(b, n, m, k);
  }
};
#endif  // GOOGLE_CUDA

// Fails when a coordinate tensor holds NaN or Inf.
template <typename Device>
Status CheckFinite(OpKernelContext* ctx, const std::string& op, const char* name,
                   const Tensor& t) {
  int64_t pos = -1;
  TF_RETURN_IF_ERROR(Backend<Device>::FirstNonFinite(ctx, t, &pos));
  if (pos >= 0) {
    return errors::InvalidArgument(op, ": ", name, " has a non-finite coordinate (NaN or Inf) at ",
                                   PointPosition(pos, t));
  }
  return absl::OkStatus();
}

// Fails when an index tensor holds a value outside [0, limit).
template <typename Device>
Status CheckIndices(OpKernelContext* ctx, const std::string& op, const char* name,
                    const Tensor& t, int64_t limit, const char* limit_name) {
  int64_t pos = -1;
  TF_RETURN_IF_ERROR(Backend<Device>::FirstOutOfRange(ctx, t, static_cast<int>(limit), &pos));
  if (pos >= 0) {
    return errors::InvalidArgument(op, ": ", name, " holds an index out of range [0, ", limit,
                                   ") (", limit_name, ") at flat position ", pos);
  }
  return absl::OkStatus();
}

// Two point clouds (batch, points, 3) of one batch, with finite coordinates.
template <typename Device>
Status CheckTwoClouds(OpKernelContext* ctx, const std::string& op, const char* name_a,
                      const Tensor& a, const char* name_b, const Tensor& b) {
  TF_RETURN_IF_ERROR(CheckPoints(op, name_a, a, 3));
  TF_RETURN_IF_ERROR(CheckPoints(op, name_b, b, 3));
  TF_RETURN_IF_ERROR(CheckSameBatch(op, name_a, a, name_b, b));
  TF_RETURN_IF_ERROR(CheckIntSizes(op, a));
  TF_RETURN_IF_ERROR(CheckIntSizes(op, b));
  TF_RETURN_IF_ERROR(CheckFinite<Device>(ctx, op, name_a, a));
  return CheckFinite<Device>(ctx, op, name_b, b);
}

// `points` (batch, points, channels) and indices into it of rank `idx_rank`, one batch.
Status CheckGatherInputs(const std::string& op, const char* points_name, const Tensor& points,
                         int channels, const Tensor& idx, int idx_rank, const char* idx_layout) {
  TF_RETURN_IF_ERROR(CheckPoints(op, points_name, points, channels));
  TF_RETURN_IF_ERROR(CheckRank(op, "idx", idx, idx_rank, idx_layout));
  TF_RETURN_IF_ERROR(CheckSameBatch(op, points_name, points, "idx", idx));
  TF_RETURN_IF_ERROR(CheckIntSizes(op, points));
  return CheckIntSizes(op, idx);
}

// ------------------------------------------------------------------------------ kernels

template <typename Device>
class FarthestPointSampleOp : public OpKernel {
 public:
  explicit FarthestPointSampleOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("npoint", &npoint_));
    OP_REQUIRES(ctx, npoint_ > 0,
                errors::InvalidArgument(name(), ": npoint must be positive, got ", npoint_));
  }

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& xyz = ctx->input(0);
    OP_REQUIRES_OK(ctx, CheckPoints(op, "xyz", xyz, 3));
    OP_REQUIRES_OK(ctx, CheckIntSizes(op, xyz));
    const int b = xyz.dim_size(0), n = xyz.dim_size(1);
    OP_REQUIRES(ctx, npoint_ <= n,
                errors::InvalidArgument(op, ": npoint (", npoint_,
                                        ") exceeds the number of points N (", n, ")"));
    OP_REQUIRES_OK(ctx, CheckFinite<Device>(ctx, op, "xyz", xyz));
    Tensor* idx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b, npoint_}), &idx));
    if (b == 0) return;
    OP_REQUIRES_OK(ctx, Backend<Device>::FarthestPointSample(
                            ctx, b, n, npoint_, xyz.flat<float>().data(), idx->flat<int>().data()));
  }

 private:
  int npoint_;
};

template <typename Device>
class GatherPointOp : public OpKernel {
 public:
  explicit GatherPointOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& xyz = ctx->input(0);
    const Tensor& idx = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckGatherInputs(op, "xyz", xyz, 3, idx, 2, "(batch, npoint)"));
    const int b = xyz.dim_size(0), n = xyz.dim_size(1), m = idx.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckIndices<Device>(ctx, op, "idx", idx, n, "points of xyz"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b, m, 3}), &out));
    if (out->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx,
                   Backend<Device>::GatherPoint(ctx, b, n, m, xyz.flat<float>().data(),
                                                idx.flat<int>().data(), out->flat<float>().data()));
  }
};

template <typename Device>
class GatherPointGradOp : public OpKernel {
 public:
  explicit GatherPointGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& xyz = ctx->input(0);
    const Tensor& idx = ctx->input(1);
    const Tensor& grad_out = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckGatherInputs(op, "xyz", xyz, 3, idx, 2, "(batch, npoint)"));
    const int b = xyz.dim_size(0), n = xyz.dim_size(1), m = idx.dim_size(1);
    OP_REQUIRES(ctx, grad_out.shape() == TensorShape({b, m, 3}),
                errors::InvalidArgument(op, ": grad_out must have shape ", b, "x", m,
                                        "x3, got ", ShapeString(grad_out)));
    OP_REQUIRES_OK(ctx, CheckIndices<Device>(ctx, op, "idx", idx, n, "points of xyz"));
    Tensor* grad_xyz = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, xyz.shape(), &grad_xyz));
    if (grad_xyz->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, Backend<Device>::GatherPointGrad(ctx, b, n, m, grad_out.flat<float>().data(),
                                                         idx.flat<int>().data(),
                                                         grad_xyz->flat<float>().data()));
  }
};

template <typename Device>
class QueryBallPointOp : public OpKernel {
 public:
  explicit QueryBallPointOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("radius", &radius_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("nsample", &nsample_));
    OP_REQUIRES(ctx, std::isfinite(radius_) && radius_ > 0,
                errors::InvalidArgument(name(), ": radius must be positive, got ", radius_));
    OP_REQUIRES(ctx, nsample_ > 0,
                errors::InvalidArgument(name(), ": nsample must be positive, got ", nsample_));
  }

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& xyz = ctx->input(0);
    const Tensor& new_xyz = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckTwoClouds<Device>(ctx, op, "xyz", xyz, "new_xyz", new_xyz));
    const int b = xyz.dim_size(0), n = xyz.dim_size(1), m = new_xyz.dim_size(1);
    Tensor *idx = nullptr, *pts_cnt = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b, m, nsample_}), &idx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({b, m}), &pts_cnt));
    if (pts_cnt->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, Backend<Device>::QueryBallPoint(
                            ctx, b, n, m, radius_, nsample_, xyz.flat<float>().data(),
                            new_xyz.flat<float>().data(), idx->flat<int>().data(),
                            pts_cnt->flat<int>().data()));
  }

 private:
  float radius_;
  int nsample_;
};

template <typename Device>
class GroupPointOp : public OpKernel {
 public:
  explicit GroupPointOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& points = ctx->input(0);
    const Tensor& idx = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckGatherInputs(op, "points", points, -1, idx, 3, "(batch, npoint, nsample)"));
    const int b = points.dim_size(0), n = points.dim_size(1), c = points.dim_size(2);
    const int m = idx.dim_size(1), nsample = idx.dim_size(2);
    OP_REQUIRES_OK(ctx, CheckIndices<Device>(ctx, op, "idx", idx, n, "points of points"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b, m, nsample, c}), &out));
    if (out->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, Backend<Device>::GroupPoint(ctx, b, n, c, m, nsample,
                                                    points.flat<float>().data(),
                                                    idx.flat<int>().data(),
                                                    out->flat<float>().data()));
  }
};

template <typename Device>
class GroupPointGradOp : public OpKernel {
 public:
  explicit GroupPointGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& points = ctx->input(0);
    const Tensor& idx = ctx->input(1);
    const Tensor& grad_out = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckGatherInputs(op, "points", points, -1, idx, 3, "(batch, npoint, nsample)"));
    const int b = points.dim_size(0), n = points.dim_size(1), c = points.dim_size(2);
    const int m = idx.dim_size(1), nsample = idx.dim_size(2);
    OP_REQUIRES(ctx, grad_out.shape() == TensorShape({b, m, nsample, c}),
                errors::InvalidArgument(op, ": grad_out must have shape (", b, ", ", m, ", ",
                                        nsample, ", ", c, "), got ", ShapeString(grad_out)));
    OP_REQUIRES_OK(ctx, CheckIndices<Device>(ctx, op, "idx", idx, n, "points of points"));
    Tensor* grad_points = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, points.shape(), &grad_points));
    if (grad_points->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, Backend<Device>::GroupPointGrad(
                            ctx, b, n, c, m, nsample, grad_out.flat<float>().data(),
                            idx.flat<int>().data(), grad_points->flat<float>().data()));
  }
};

template <typename Device>
class KnnPointOp : public OpKernel {
 public:
  explicit KnnPointOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("k", &k_));
    OP_REQUIRES(ctx, k_ > 0, errors::InvalidArgument(name(), ": k must be positive, got ", k_));
  }

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& xyz = ctx->input(0);
    const Tensor& new_xyz = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckTwoClouds<Device>(ctx, op, "xyz", xyz, "new_xyz", new_xyz));
    const int b = xyz.dim_size(0), n = xyz.dim_size(1), m = new_xyz.dim_size(1);
    OP_REQUIRES(ctx, k_ <= n,
                errors::InvalidArgument(op, ": k (", k_, ") exceeds the number of points N (", n,
                                        ")"));
    Tensor *dist = nullptr, *idx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b, m, k_}), &dist));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({b, m, k_}), &idx));
    if (dist->NumElements() == 0) return;
    Tensor workspace;
    float* workspace_ptr = nullptr;
    const int64_t workspace_floats = Backend<Device>::KnnWorkspaceFloats(b, n, m, k_);
    if (workspace_floats > 0) {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DT_FLOAT,
                                             TensorShape({workspace_floats}), &workspace));
      workspace_ptr = workspace.flat<float>().data();
    }
    OP_REQUIRES_OK(ctx, Backend<Device>::KnnPoint(ctx, b, n, m, k_, xyz.flat<float>().data(),
                                                  new_xyz.flat<float>().data(), workspace_ptr,
                                                  dist->flat<float>().data(),
                                                  idx->flat<int>().data()));
  }

 private:
  int k_;
};

template <typename Device>
class ThreeNNOp : public OpKernel {
 public:
  explicit ThreeNNOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& xyz1 = ctx->input(0);
    const Tensor& xyz2 = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckTwoClouds<Device>(ctx, op, "xyz1", xyz1, "xyz2", xyz2));
    const int b = xyz1.dim_size(0), n = xyz1.dim_size(1), m = xyz2.dim_size(1);
    Tensor *dist = nullptr, *idx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b, n, 3}), &dist));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({b, n, 3}), &idx));
    if (dist->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, Backend<Device>::ThreeNN(ctx, b, n, m, xyz1.flat<float>().data(),
                                                 xyz2.flat<float>().data(),
                                                 dist->flat<float>().data(),
                                                 idx->flat<int>().data()));
  }
};

// Shape checks shared by three_interpolate and its gradient.
Status CheckInterpolationInputs(const std::string& op, const Tensor& points, const Tensor& idx,
                                const Tensor& weight) {
  TF_RETURN_IF_ERROR(CheckPoints(op, "points", points, -1));
  TF_RETURN_IF_ERROR(CheckPoints(op, "idx", idx, 3));
  TF_RETURN_IF_ERROR(CheckSameShape(op, "idx", idx, "weight", weight));
  TF_RETURN_IF_ERROR(CheckSameBatch(op, "points", points, "idx", idx));
  TF_RETURN_IF_ERROR(CheckIntSizes(op, points));
  return CheckIntSizes(op, idx);
}

template <typename Device>
class ThreeInterpolateOp : public OpKernel {
 public:
  explicit ThreeInterpolateOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& points = ctx->input(0);
    const Tensor& idx = ctx->input(1);
    const Tensor& weight = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckInterpolationInputs(op, points, idx, weight));
    const int b = points.dim_size(0), m = points.dim_size(1), c = points.dim_size(2);
    const int n = idx.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckIndices<Device>(ctx, op, "idx", idx, m, "points of points"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b, n, c}), &out));
    if (out->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, Backend<Device>::ThreeInterpolate(
                            ctx, b, m, c, n, points.flat<float>().data(), idx.flat<int>().data(),
                            weight.flat<float>().data(), out->flat<float>().data()));
  }
};

template <typename Device>
class ThreeInterpolateGradOp : public OpKernel {
 public:
  explicit ThreeInterpolateGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& points = ctx->input(0);
    const Tensor& idx = ctx->input(1);
    const Tensor& weight = ctx->input(2);
    const Tensor& grad_out = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckInterpolationInputs(op, points, idx, weight));
    const int b = points.dim_size(0), m = points.dim_size(1), c = points.dim_size(2);
    const int n = idx.dim_size(1);
    OP_REQUIRES(ctx, grad_out.shape() == TensorShape({b, n, c}),
                errors::InvalidArgument(op, ": grad_out must have shape (", b, ", ", n, ", ", c,
                                        "), got ", ShapeString(grad_out)));
    OP_REQUIRES_OK(ctx, CheckIndices<Device>(ctx, op, "idx", idx, m, "points of points"));
    Tensor* grad_points = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, points.shape(), &grad_points));
    if (grad_points->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, Backend<Device>::ThreeInterpolateGrad(
                            ctx, b, m, c, n, grad_out.flat<float>().data(),
                            idx.flat<int>().data(), weight.flat<float>().data(),
                            grad_points->flat<float>().data()));
  }
};

// Shape checks shared by gather_weight_net_sum and its gradient: hidden (B, M, nsample, units)
// of idx (B, M, nsample), kernel (units, C) and bias (C) of points (B, N, C).
Status CheckGatherWeightNetSumInputs(const std::string& op, const Tensor& points,
                                     const Tensor& idx, const Tensor& hidden, const Tensor& kernel,
                                     const Tensor& bias) {
  TF_RETURN_IF_ERROR(
      CheckGatherInputs(op, "points", points, -1, idx, 3, "(batch, npoint, nsample)"));
  if (hidden.dims() != 4 || hidden.dim_size(0) != idx.dim_size(0) ||
      hidden.dim_size(1) != idx.dim_size(1) || hidden.dim_size(2) != idx.dim_size(2)) {
    return errors::InvalidArgument(op, ": hidden must have shape (batch, npoint, nsample, units) ",
                                   "with (", idx.dim_size(0), ", ", idx.dim_size(1), ", ",
                                   idx.dim_size(2), ") of idx, got ", ShapeString(hidden));
  }
  if (kernel.dims() != 2 || kernel.dim_size(0) != hidden.dim_size(3) ||
      kernel.dim_size(1) != points.dim_size(2)) {
    return errors::InvalidArgument(op, ": kernel must have shape (units, channels) = (",
                                   hidden.dim_size(3), ", ", points.dim_size(2),
                                   ") of hidden and points, got ", ShapeString(kernel));
  }
  if (bias.dims() != 1 || bias.dim_size(0) != points.dim_size(2)) {
    return errors::InvalidArgument(op, ": bias must have shape (channels,) = (",
                                   points.dim_size(2), ",) of points, got ", ShapeString(bias));
  }
  TF_RETURN_IF_ERROR(CheckIntSizes(op, hidden));
  return CheckIntSizes(op, kernel);
}

template <typename Device>
class GatherWeightNetSumOp : public OpKernel {
 public:
  explicit GatherWeightNetSumOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor &points = ctx->input(0), &idx = ctx->input(1), &hidden = ctx->input(2);
    const Tensor &kernel = ctx->input(3), &bias = ctx->input(4);
    OP_REQUIRES_OK(ctx, CheckGatherWeightNetSumInputs(op, points, idx, hidden, kernel, bias));
    const int b = points.dim_size(0), n = points.dim_size(1), c = points.dim_size(2);
    const int m = idx.dim_size(1), nsample = idx.dim_size(2), units = hidden.dim_size(3);
    OP_REQUIRES_OK(ctx, CheckIndices<Device>(ctx, op, "idx", idx, n, "points of points"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b, m, c}), &out));
    if (out->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, Backend<Device>::GatherWeightNetSum(
                            ctx, b, n, c, m, nsample, units, points.flat<float>().data(),
                            idx.flat<int>().data(), hidden.flat<float>().data(),
                            kernel.flat<float>().data(), bias.flat<float>().data(),
                            out->flat<float>().data()));
  }
};

template <typename Device>
class GatherWeightNetSumGradOp : public OpKernel {
 public:
  explicit GatherWeightNetSumGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor &points = ctx->input(0), &idx = ctx->input(1), &hidden = ctx->input(2);
    const Tensor &kernel = ctx->input(3), &bias = ctx->input(4), &grad_out = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckGatherWeightNetSumInputs(op, points, idx, hidden, kernel, bias));
    const int b = points.dim_size(0), n = points.dim_size(1), c = points.dim_size(2);
    const int m = idx.dim_size(1), nsample = idx.dim_size(2), units = hidden.dim_size(3);
    OP_REQUIRES(ctx, grad_out.shape() == TensorShape({b, m, c}),
                errors::InvalidArgument(op, ": grad_out must have shape (", b, ", ", m, ", ", c,
                                        "), got ", ShapeString(grad_out)));
    OP_REQUIRES_OK(ctx, CheckIndices<Device>(ctx, op, "idx", idx, n, "points of points"));
    Tensor *grad_points = nullptr, *grad_hidden = nullptr, *grad_kernel = nullptr,
           *grad_bias = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, points.shape(), &grad_points));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, hidden.shape(), &grad_hidden));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, kernel.shape(), &grad_kernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, bias.shape(), &grad_bias));
    OP_REQUIRES_OK(ctx, Backend<Device>::GatherWeightNetSumGrad(
                            ctx, b, n, c, m, nsample, units, points.flat<float>().data(),
                            idx.flat<int>().data(), hidden.flat<float>().data(),
                            kernel.flat<float>().data(), bias.flat<float>().data(),
                            grad_out.flat<float>().data(), grad_points->flat<float>().data(),
                            grad_hidden->flat<float>().data(), grad_kernel->flat<float>().data(),
                            grad_bias->flat<float>().data()));
  }
};

// ------------------------------------------------------------------------------ registration

#define JSNET_REGISTER(NAME, KERNEL, DEVICE, DEVICE_TYPE) \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE), KERNEL<DEVICE_TYPE>)

#define JSNET_REGISTER_ALL(DEVICE, DEVICE_TYPE)                                             \
  JSNET_REGISTER("JsnetFarthestPointSample", FarthestPointSampleOp, DEVICE, DEVICE_TYPE);   \
  JSNET_REGISTER("JsnetGatherPoint", GatherPointOp, DEVICE, DEVICE_TYPE);                   \
  JSNET_REGISTER("JsnetGatherPointGrad", GatherPointGradOp, DEVICE, DEVICE_TYPE);           \
  JSNET_REGISTER("JsnetQueryBallPoint", QueryBallPointOp, DEVICE, DEVICE_TYPE);             \
  JSNET_REGISTER("JsnetGroupPoint", GroupPointOp, DEVICE, DEVICE_TYPE);                     \
  JSNET_REGISTER("JsnetGroupPointGrad", GroupPointGradOp, DEVICE, DEVICE_TYPE);             \
  JSNET_REGISTER("JsnetKnnPoint", KnnPointOp, DEVICE, DEVICE_TYPE);                         \
  JSNET_REGISTER("JsnetThreeNN", ThreeNNOp, DEVICE, DEVICE_TYPE);                           \
  JSNET_REGISTER("JsnetThreeInterpolate", ThreeInterpolateOp, DEVICE, DEVICE_TYPE);         \
  JSNET_REGISTER("JsnetThreeInterpolateGrad", ThreeInterpolateGradOp, DEVICE, DEVICE_TYPE); \
  JSNET_REGISTER("JsnetGatherWeightNetSum", GatherWeightNetSumOp, DEVICE, DEVICE_TYPE);     \
  JSNET_REGISTER("JsnetGatherWeightNetSumGrad", GatherWeightNetSumGradOp, DEVICE, DEVICE_TYPE)

JSNET_REGISTER_ALL(DEVICE_CPU, CPUDevice);
#if GOOGLE_CUDA
JSNET_REGISTER_ALL(::tensorflow::DEVICE_GPU, GPUDevice);
#endif

// ------------------------------------------------------------------------------ training-mode batch norm
// JsnetBatchNormTraining: the batch norm of a training step over every axis of x but the last,
// with the ReLU after it when `relu`; its gradient recomputes the ReLU mask from x and the saved
// moments instead of keeping the outputs (arithmetic: batch_norm_kernels.h).

Status BatchNormChannels(InferenceContext* c, ShapeHandle x, std::initializer_list<int> inputs,
                         DimensionHandle* channels) {
  *channels = c->Dim(x, -1);
  for (int input : inputs) {
    ShapeHandle vector;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(input), 1, &vector));
    TF_RETURN_IF_ERROR(c->Merge(*channels, c->Dim(vector, 0), channels));
  }
  return absl::OkStatus();
}

REGISTER_OP("JsnetBatchNormTraining")
    .Attr("epsilon: float")
    .Attr("relu: bool")
    .Input("x: float32")
    .Input("gamma: float32")
    .Input("beta: float32")
    .Output("y: float32")
    .Output("mean: float32")
    .Output("variance: float32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      DimensionHandle channels;
      TF_RETURN_IF_ERROR(BatchNormChannels(c, x, {1, 2}, &channels));
      c->set_output(0, x);
      c->set_output(1, c->Vector(channels));
      c->set_output(2, c->Vector(channels));
      return absl::OkStatus();
    })
    .Doc("Training-mode batch norm of x (..., C) with the batch's mean and biased variance, "
         "then max(., 0) when relu: y, mean (C), variance (C).");

REGISTER_OP("JsnetBatchNormTrainingGrad")
    .Attr("epsilon: float")
    .Attr("relu: bool")
    .Input("grad_y: float32")
    .Input("x: float32")
    .Input("mean: float32")
    .Input("variance: float32")
    .Input("gamma: float32")
    .Input("beta: float32")
    .Output("grad_x: float32")
    .Output("grad_gamma: float32")
    .Output("grad_beta: float32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(1), 1, &x));
      TF_RETURN_IF_ERROR(c->Merge(x, c->input(0), &x));
      DimensionHandle channels;
      TF_RETURN_IF_ERROR(BatchNormChannels(c, x, {2, 3, 4, 5}, &channels));
      c->set_output(0, x);
      c->set_output(1, c->Vector(channels));
      c->set_output(2, c->Vector(channels));
      return absl::OkStatus();
    });

// x (..., C), C < 2^31, and each named tensor of shape (C).
Status CheckBatchNormInputs(const std::string& op, const Tensor& x,
                            std::initializer_list<std::pair<const char*, const Tensor*>> vectors) {
  if (x.dims() < 1) {
    return errors::InvalidArgument(op, ": x must have shape (..., channels), got ", ShapeString(x));
  }
  const int64_t channels = x.dim_size(x.dims() - 1);
  if (channels > INT32_MAX) {
    return errors::InvalidArgument(op, ": x ", ShapeString(x), " has more than 2^31 - 1 channels");
  }
  for (const auto& [name, t] : vectors) {
    if (t->dims() != 1 || t->dim_size(0) != channels) {
      return errors::InvalidArgument(op, ": ", name, " must have shape (channels,) = (", channels,
                                     ",) of x ", ShapeString(x), ", got ", ShapeString(*t));
    }
  }
  return absl::OkStatus();
}

template <typename Device>
struct BatchNormBackend;

template <>
struct BatchNormBackend<CPUDevice> {
  // Cycles per value of a pass (for the thread pool's sharding).
  static constexpr int64_t kCyclesPerValue = 2;

  // Partial sums of every row block: blocks * 2 * C doubles.
  static Status Partials(OpKernelContext* ctx, int64_t rows, int c, Tensor* partial) {
    return ctx->allocate_temp(::tensorflow::DT_DOUBLE,
                              TensorShape({JSNET_BATCH_NORM_BLOCKS(rows) * 2 * c}), partial);
  }

  static void OverBlocks(OpKernelContext* ctx, int64_t rows, int c,
                         const std::function<void(int64_t, int64_t)>& fn) {
    Backend<CPUDevice>::Parallel(ctx, JSNET_BATCH_NORM_BLOCKS(rows),
                                 kCyclesPerValue * JSNET_BATCH_NORM_BLOCK_ROWS * c, fn);
  }

  static void OverRows(OpKernelContext* ctx, int64_t rows, int c,
                       const std::function<void(int64_t, int64_t)>& fn) {
    Backend<CPUDevice>::Parallel(ctx, rows, kCyclesPerValue * c, fn);
  }

  static Status Forward(OpKernelContext* ctx, int64_t rows, int c, const float* x,
                        const float* gamma, const float* beta, float epsilon, bool relu, float* y,
                        float* mean, float* variance) {
    Tensor partial;
    TF_RETURN_IF_ERROR(Partials(ctx, rows, c, &partial));
    double* sums = partial.flat<double>().data();
    OverBlocks(ctx, rows, c, [&](int64_t s, int64_t e) {
      jsnet_batch_norm_moments_cpu(s, e, rows, c, x, sums);
    });
    jsnet_batch_norm_combine_moments_cpu(rows, c, x, sums, mean, variance);
    OverRows(ctx, rows, c, [&](int64_t s, int64_t e) {
      jsnet_batch_norm_normalize_cpu(s, e, c, x, mean, variance, gamma, beta, epsilon, relu, y);
    });
    return absl::OkStatus();
  }

  static Status Gradient(OpKernelContext* ctx, int64_t rows, int c, const float* grad_y,
                         const float* x, const float* mean, const float* variance,
                         const float* gamma, const float* beta, float epsilon, bool relu,
                         float* grad_x, float* grad_gamma, float* grad_beta) {
    Tensor partial, coefficients;
    TF_RETURN_IF_ERROR(Partials(ctx, rows, c, &partial));
    TF_RETURN_IF_ERROR(
        ctx->allocate_temp(::tensorflow::DT_FLOAT, TensorShape({3 * int64_t{c}}), &coefficients));
    double* sums = partial.flat<double>().data();
    float* k = coefficients.flat<float>().data();
    OverBlocks(ctx, rows, c, [&](int64_t s, int64_t e) {
      jsnet_batch_norm_grad_sums_cpu(s, e, rows, c, grad_y, x, mean, variance, gamma, beta,
                                     epsilon, relu, sums);
    });
    jsnet_batch_norm_grad_combine_cpu(rows, c, sums, variance, gamma, epsilon, grad_gamma,
                                      grad_beta, k);
    OverRows(ctx, rows, c, [&](int64_t s, int64_t e) {
      jsnet_batch_norm_grad_x_cpu(s, e, c, grad_y, x, mean, beta, relu, k, grad_x);
    });
    return absl::OkStatus();
  }
};

#if GOOGLE_CUDA
template <>
struct BatchNormBackend<GPUDevice> {
  // The CUDA kernels put tiles of 32 channels on the grid's y axis (at most 65535 blocks).
  static constexpr int kMaxChannels = 65535 * 32;

  static Status Workspace(OpKernelContext* ctx, int64_t rows, int c, Tensor* workspace) {
    if (c > kMaxChannels) {
      return errors::InvalidArgument("batch_norm_training: the CUDA kernels take at most ", kMaxChannels,
                                     " channels, got ", c);
    }
    return ctx->allocate_temp(::tensorflow::DT_DOUBLE,
                              TensorShape({jsnet_batch_norm_cuda_workspace_doubles(rows, c)}),
                              workspace);
  }

  static Status Forward(OpKernelContext* ctx, int64_t rows, int c, const float* x,
                        const float* gamma, const float* beta, float epsilon, bool relu, float* y,
                        float* mean, float* variance) {
    Tensor workspace;
    TF_RETURN_IF_ERROR(Workspace(ctx, rows, c, &workspace));
    return Backend<GPUDevice>::Check(
        jsnet_batch_norm_cuda(rows, c, x, gamma, beta, epsilon, relu,
                              workspace.flat<double>().data(), y, mean, variance,
                              Backend<GPUDevice>::Stream(ctx)),
        "batch_norm_training");
  }

  static Status Gradient(OpKernelContext* ctx, int64_t rows, int c, const float* grad_y,
                         const float* x, const float* mean, const float* variance,
                         const float* gamma, const float* beta, float epsilon, bool relu,
                         float* grad_x, float* grad_gamma, float* grad_beta) {
    Tensor workspace;
    TF_RETURN_IF_ERROR(Workspace(ctx, rows, c, &workspace));
    return Backend<GPUDevice>::Check(
        jsnet_batch_norm_grad_cuda(rows, c, grad_y, x, mean, variance, gamma, beta, epsilon, relu,
                                   workspace.flat<double>().data(), grad_x, grad_gamma, grad_beta,
                                   Backend<GPUDevice>::Stream(ctx)),
        "batch_norm_training_grad");
  }
};
#endif  // GOOGLE_CUDA

// The attributes shared by the op and its gradient.
class BatchNormKernel : public OpKernel {
 public:
  explicit BatchNormKernel(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &relu_));
    OP_REQUIRES(ctx, std::isfinite(epsilon_) && epsilon_ > 0,
                errors::InvalidArgument(name(), ": epsilon must be a positive finite number, got ",
                                        epsilon_));
  }

 protected:
  // (rows, channels) of x (..., C) seen as a matrix.
  static void Matrix(const Tensor& x, int64_t* rows, int* channels) {
    *channels = static_cast<int>(x.dim_size(x.dims() - 1));
    *rows = *channels > 0 ? x.NumElements() / *channels : 0;
  }

  float epsilon_;
  bool relu_;
};

template <typename Device>
class BatchNormTrainingOp : public BatchNormKernel {
 public:
  using BatchNormKernel::BatchNormKernel;

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& x = ctx->input(0);
    const Tensor& gamma = ctx->input(1);
    const Tensor& beta = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckBatchNormInputs(op, x, {{"gamma", &gamma}, {"beta", &beta}}));
    int64_t rows;
    int c;
    Matrix(x, &rows, &c);
    Tensor *y = nullptr, *mean = nullptr, *variance = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({c}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({c}), &variance));
    if (c == 0) return;
    OP_REQUIRES_OK(ctx, BatchNormBackend<Device>::Forward(
                            ctx, rows, c, x.flat<float>().data(), gamma.flat<float>().data(),
                            beta.flat<float>().data(), epsilon_, relu_, y->flat<float>().data(),
                            mean->flat<float>().data(), variance->flat<float>().data()));
  }
};

template <typename Device>
class BatchNormTrainingGradOp : public BatchNormKernel {
 public:
  using BatchNormKernel::BatchNormKernel;

  void Compute(OpKernelContext* ctx) override {
    const std::string op = type_string();
    const Tensor& grad_y = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& mean = ctx->input(2);
    const Tensor& variance = ctx->input(3);
    const Tensor& gamma = ctx->input(4);
    const Tensor& beta = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckBatchNormInputs(op, x, {{"mean", &mean}, {"variance", &variance},
                                                     {"gamma", &gamma}, {"beta", &beta}}));
    OP_REQUIRES_OK(ctx, CheckSameShape(op, "grad_y", grad_y, "x", x));
    int64_t rows;
    int c;
    Matrix(x, &rows, &c);
    Tensor *grad_x = nullptr, *grad_gamma = nullptr, *grad_beta = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &grad_x));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({c}), &grad_gamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({c}), &grad_beta));
    if (c == 0) return;
    OP_REQUIRES_OK(ctx, BatchNormBackend<Device>::Gradient(
                            ctx, rows, c, grad_y.flat<float>().data(), x.flat<float>().data(),
                            mean.flat<float>().data(), variance.flat<float>().data(),
                            gamma.flat<float>().data(), beta.flat<float>().data(), epsilon_, relu_,
                            grad_x->flat<float>().data(), grad_gamma->flat<float>().data(),
                            grad_beta->flat<float>().data()));
  }
};

JSNET_REGISTER("JsnetBatchNormTraining", BatchNormTrainingOp, DEVICE_CPU, CPUDevice);
JSNET_REGISTER("JsnetBatchNormTrainingGrad", BatchNormTrainingGradOp, DEVICE_CPU, CPUDevice);
#if GOOGLE_CUDA
JSNET_REGISTER("JsnetBatchNormTraining", BatchNormTrainingOp, ::tensorflow::DEVICE_GPU, GPUDevice);
JSNET_REGISTER("JsnetBatchNormTrainingGrad", BatchNormTrainingGradOp, ::tensorflow::DEVICE_GPU,
               GPUDevice);
#endif

}  // namespace jsnet
