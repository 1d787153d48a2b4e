// CPU kernels of the seven JSNet point ops (contract and semantics: point_kernels.h).
//
// Hot loops are written as plain loops over structure-of-arrays buffers so the compiler
// vectorises them; the library is built with -ffp-contract=off so every distance is the same
// float32 value the CUDA kernels and the pure-TF twins compute.
#include "point_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// One AVX2 clone and a baseline clone, chosen at load time (no FMA: -ffp-contract=off holds).
#define JSNET_HOT __attribute__((target_clones("avx2", "default")))
#else
#define JSNET_HOT
#endif

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Points of one batch element split into x, y, z arrays for vectorised distance loops.
struct PointColumns {
  std::vector<float> x, y, z;
  PointColumns(const float* xyz, int n) : x(n), y(n), z(n) {
    for (int j = 0; j < n; ++j) {
      x[j] = xyz[3 * j];
      y[j] = xyz[3 * j + 1];
      z[j] = xyz[3 * j + 2];
    }
  }
};

// d2[j] = squared distance from (qx, qy, qz) to point j, for j in [0, n).
JSNET_HOT void squared_distances(const float* x, const float* y, const float* z, int n,
                                 const float* q, float* d2) {
  const float qx = q[0], qy = q[1], qz = q[2];
  for (int j = 0; j < n; ++j) {
    const float dx = x[j] - qx;
    const float dy = y[j] - qy;
    const float dz = z[j] - qz;
    d2[j] = dx * dx + dy * dy + dz * dz;
  }
}

// temp[j] = min(temp[j], d2 to the centre); returns the largest updated value.
JSNET_HOT float relax_and_max(const PointColumns& p, int n, float qx, float qy, float qz,
                              float* temp) {
  const float* x = p.x.data();
  const float* y = p.y.data();
  const float* z = p.z.data();
  float best = -1.0f;
  for (int j = 0; j < n; ++j) {
    const float dx = x[j] - qx;
    const float dy = y[j] - qy;
    const float dz = z[j] - qz;
    const float d = dx * dx + dy * dy + dz * dz;
    const float t = d < temp[j] ? d : temp[j];
    temp[j] = t;
    best = t > best ? t : best;
  }
  return best;
}

// Keeps the k smallest (d2, index) pairs seen so far, sorted ascending, ties by lower index,
// for points offered in increasing index order.
class SortedTopK {
 public:
  SortedTopK(int k, float* dist, int* idx) : k_(k), size_(0), dist_(dist), idx_(idx) {}

  void offer(float d, int j) {
    if (size_ == k_) {
      if (!(d < dist_[k_ - 1])) return;  // equal distance: the earlier index wins
      --size_;
    }
    int pos = size_;
    while (pos > 0 && dist_[pos - 1] > d) {
      dist_[pos] = dist_[pos - 1];
      idx_[pos] = idx_[pos - 1];
      --pos;
    }
    dist_[pos] = d;
    idx_[pos] = j;
    ++size_;
  }

  int size() const { return size_; }

 private:
  int k_, size_;
  float* dist_;
  int* idx_;
};

// Above this k an insertion list costs more than sorting the candidates.
constexpr int kInsertionMaxK = 64;

}  // namespace

extern "C" {

void jsnet_farthest_point_sample_cpu(int64_t begin, int64_t end, int n, int npoint,
                                     const float* xyz, int* idx) {
  std::vector<float> temp(n);
  for (int64_t b = begin; b < end; ++b) {
    const PointColumns p(xyz + b * n * 3, n);
    int* out = idx + b * npoint;
    std::fill(temp.begin(), temp.end(), kInf);
    int last = 0;
    out[0] = 0;
    for (int i = 1; i < npoint; ++i) {
      const float best = relax_and_max(p, n, p.x[last], p.y[last], p.z[last], temp.data());
      int next = 0;
      while (temp[next] != best) ++next;  // first index holding the maximum
      out[i] = next;
      last = next;
    }
  }
}

void jsnet_gather_point_cpu(int64_t begin, int64_t end, int n, int m, const float* xyz,
                            const int* idx, float* out) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / m;
    const float* src = xyz + (b * n + idx[row]) * 3;
    float* dst = out + row * 3;
    dst[0] = src[0];
    dst[1] = src[1];
    dst[2] = src[2];
  }
}

void jsnet_gather_point_grad_cpu(int64_t begin, int64_t end, int n, int m,
                                 const float* grad_out, const int* idx, float* grad_xyz) {
  for (int64_t b = begin; b < end; ++b) {
    float* g = grad_xyz + b * n * 3;
    std::memset(g, 0, sizeof(float) * 3 * static_cast<size_t>(n));
    for (int i = 0; i < m; ++i) {
      const int64_t row = b * m + i;
      float* dst = g + static_cast<int64_t>(idx[row]) * 3;
      dst[0] += grad_out[row * 3];
      dst[1] += grad_out[row * 3 + 1];
      dst[2] += grad_out[row * 3 + 2];
    }
  }
}

void jsnet_query_ball_point_cpu(int64_t begin, int64_t end, int n, int m, float radius,
                                int nsample, const float* xyz, const float* new_xyz, int* idx,
                                int* pts_cnt) {
  constexpr int kChunk = 256;
  const float r2 = radius * radius;
  float d2[kChunk];
  int64_t loaded_batch = -1;
  PointColumns p(nullptr, 0);
  for (int64_t q = begin; q < end; ++q) {
    const int64_t b = q / m;
    if (b != loaded_batch) {
      p = PointColumns(xyz + b * n * 3, n);
      loaded_batch = b;
    }
    const float* c = new_xyz + q * 3;
    int* out = idx + q * nsample;
    int cnt = 0;
    for (int start = 0; start < n && cnt < nsample; start += kChunk) {
      const int len = std::min(kChunk, n - start);
      // Distances of a chunk first (vectorised), then the ordered scan.
      squared_distances(p.x.data() + start, p.y.data() + start, p.z.data() + start, len, c, d2);
      for (int j = 0; j < len && cnt < nsample; ++j) {
        if (d2[j] < r2) out[cnt++] = start + j;
      }
    }
    const int pad = cnt > 0 ? out[0] : 0;
    for (int s = cnt; s < nsample; ++s) out[s] = pad;
    pts_cnt[q] = cnt;
  }
}

void jsnet_group_point_cpu(int64_t begin, int64_t end, int n, int c, int m, int nsample,
                           const float* points, const int* idx, float* out) {
  const int64_t rows_per_batch = static_cast<int64_t>(m) * nsample;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / rows_per_batch;
    const float* src = points + (b * n + idx[row]) * c;
    std::memcpy(out + row * c, src, sizeof(float) * static_cast<size_t>(c));
  }
}

void jsnet_group_point_grad_cpu(int64_t begin, int64_t end, int n, int c, int m, int nsample,
                                const float* grad_out, const int* idx, float* grad_points) {
  const int64_t rows_per_batch = static_cast<int64_t>(m) * nsample;
  for (int64_t b = begin; b < end; ++b) {
    float* g = grad_points + b * n * c;
    std::memset(g, 0, sizeof(float) * static_cast<size_t>(n) * c);
    for (int64_t r = 0; r < rows_per_batch; ++r) {
      const int64_t row = b * rows_per_batch + r;
      float* dst = g + static_cast<int64_t>(idx[row]) * c;
      const float* src = grad_out + row * c;
      for (int ch = 0; ch < c; ++ch) dst[ch] += src[ch];
    }
  }
}

void jsnet_knn_point_cpu(int64_t begin, int64_t end, int n, int m, int k, const float* xyz,
                         const float* new_xyz, float* dist, int* idx) {
  std::vector<float> d2(n);
  std::vector<int> order;
  int64_t loaded_batch = -1;
  PointColumns p(nullptr, 0);
  for (int64_t q = begin; q < end; ++q) {
    const int64_t b = q / m;
    if (b != loaded_batch) {
      p = PointColumns(xyz + b * n * 3, n);
      loaded_batch = b;
    }
    const float* c = new_xyz + q * 3;
    float* out_d = dist + q * k;
    int* out_i = idx + q * k;
    squared_distances(p.x.data(), p.y.data(), p.z.data(), n, c, d2.data());
    if (k <= kInsertionMaxK) {
      SortedTopK top(k, out_d, out_i);
      for (int j = 0; j < n; ++j) {
        top.offer(d2[j], j);
      }
    } else {
      order.resize(n);
      std::iota(order.begin(), order.end(), 0);
      auto closer = [&](int a, int bb) { return d2[a] < d2[bb] || (d2[a] == d2[bb] && a < bb); };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), closer);
      for (int s = 0; s < k; ++s) {
        out_i[s] = order[s];
        out_d[s] = d2[order[s]];
      }
    }
  }
}

void jsnet_three_nn_cpu(int64_t begin, int64_t end, int n, int m, const float* xyz1,
                        const float* xyz2, float* dist, int* idx) {
  std::vector<float> d2(m);
  int64_t loaded_batch = -1;
  PointColumns p(nullptr, 0);
  for (int64_t q = begin; q < end; ++q) {
    const int64_t b = q / n;
    if (b != loaded_batch) {
      p = PointColumns(xyz2 + b * m * 3, m);
      loaded_batch = b;
    }
    const float* c = xyz1 + q * 3;
    float* out_d = dist + q * 3;
    int* out_i = idx + q * 3;
    squared_distances(p.x.data(), p.y.data(), p.z.data(), m, c, d2.data());
    SortedTopK top(3, out_d, out_i);
    for (int j = 0; j < m; ++j) {
      top.offer(d2[j], j);
    }
    for (int s = top.size(); s < 3; ++s) {
      out_d[s] = kInf;
      out_i[s] = 0;
    }
  }
}

void jsnet_three_interpolate_cpu(int64_t begin, int64_t end, int m, int c, int n,
                                 const float* points, const int* idx, const float* weight,
                                 float* out) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / n;
    const float* p0 = points + (b * m + idx[row * 3]) * c;
    const float* p1 = points + (b * m + idx[row * 3 + 1]) * c;
    const float* p2 = points + (b * m + idx[row * 3 + 2]) * c;
    const float w0 = weight[row * 3], w1 = weight[row * 3 + 1], w2 = weight[row * 3 + 2];
    float* dst = out + row * c;
    for (int ch = 0; ch < c; ++ch) dst[ch] = w0 * p0[ch] + w1 * p1[ch] + w2 * p2[ch];
  }
}

void jsnet_three_interpolate_grad_cpu(int64_t begin, int64_t end, int m, int c, int n,
                                      const float* grad_out, const int* idx,
                                      const float* weight, float* grad_points) {
  for (int64_t b = begin; b < end; ++b) {
    float* g = grad_points + b * m * c;
    std::memset(g, 0, sizeof(float) * static_cast<size_t>(m) * c);
    for (int i = 0; i < n; ++i) {
      const int64_t row = b * n + i;
      const float* src = grad_out + row * c;
      for (int s = 0; s < 3; ++s) {
        float* dst = g + static_cast<int64_t>(idx[row * 3 + s]) * c;
        const float w = weight[row * 3 + s];
        for (int ch = 0; ch < c; ++ch) dst[ch] += w * src[ch];
      }
    }
  }
}

int64_t jsnet_first_non_finite_cpu(int64_t count, const float* values) {
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) return i;
  }
  return -1;
}

int64_t jsnet_first_out_of_range_cpu(int64_t count, const int* values, int limit) {
  for (int64_t i = 0; i < count; ++i) {
    if (values[i] < 0 || values[i] >= limit) return i;
  }
  return -1;
}

}  // extern "C"
