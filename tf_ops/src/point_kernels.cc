// CPU kernels of the JSNet point ops (contract and semantics: point_kernels.h).
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
#include <type_traits>
#include <vector>

#include "cpu_isa.h"

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

  bool full() const { return size_ == k_; }
  // The distance a later candidate must be strictly below to enter a full list.
  float limit() const { return dist_[k_ - 1]; }
  int size() const { return size_; }

 private:
  int k_, size_;
  float* dist_;
  int* idx_;
};

// Above this k an insertion list costs more than sorting the candidates.
constexpr int kInsertionMaxK = 64;

// ------------------------------------------------- leaf partition of one cloud

// One cloud split into leaves of at most kLeafMax points by median cuts of the widest axis (a kd
// partition), for the pruned farthest point sampling (farthest_point_sample_leaves in
// point_kernels_simd.inc) and the pruned three_nn search (nearest_leaves). The cuts rank the
// points by their cell among 1024 per axis of the bounding box (ties by index), from one counting
// sort per axis kept sorted through the cuts by stable partitions, so the build has no
// data-dependent branches.
//
// Slots hold the points leaf by leaf, each leaf in original index order. Every left half holds a
// multiple of kLeafPad points, so only the last leaf is padded (to a multiple of kLeafPad slots)
// with copies of its first point whose nearest value stays -1: they never change and never win
// (the searches overwrite their coordinates with NaN: HidePadding). Per leaf: its box (the min /
// max of its coordinates) and the largest nearest value of its points. The per-leaf arrays are
// padded to a multiple of kLeafPad leaves with an empty box (lo +inf, hi -inf: every distance
// bound is +inf) and largest value -1, so those are never visited and never win.
constexpr int kLeafMax = 64;
constexpr int kLeafPad = 16;  // the widest SIMD width

struct PointLeaves {
  int leaves = 0;                       // real leaves; the per-leaf arrays hold padded_leaves()
  std::vector<int> start;               // leaf l holds slots [start[l], start[l + 1])
  std::vector<float> x, y, z, nearest;  // per slot
  std::vector<int> index;               // per slot: original index (-1: padding)
  std::vector<float> lo_x, lo_y, lo_z, hi_x, hi_y, hi_z, leaf_max;  // per leaf
  std::vector<int> sorted[3], buffer, cell, leaf_of, next;         // build scratch

  int padded_leaves() const { return (leaves + kLeafPad - 1) / kLeafPad * kLeafPad; }
  int begin(int l) const { return start[l]; }
  int end(int l) const { return start[l + 1]; }

  // Splits the n >= 1 points (px, py, pz) into leaves; every nearest value starts at +inf.
  void Build(const float* px, const float* py, const float* pz, int n) {
    const float* axes[3] = {px, py, pz};
    cell.resize(n);
    buffer.resize(n);
    leaf_of.resize(n);
    for (int a = 0; a < 3; ++a) {  // the points in order of their cell on axis a
      const float* v = axes[a];
      float low, high;
      MinMax(v, n, &low, &high);
      const float scale = high > low ? 1024.0f / (high - low) : 0.0f;  // 0 when high - low is inf
      int counts[1025] = {0};
      for (int j = 0; j < n; ++j) {
        const float c = (v[j] - low) * scale;  // NaN (inf * 0) or past the end: the last cell
        cell[j] = static_cast<int>(c < 1023.0f ? c : 1023.0f);
      }
      for (int j = 0; j < n; ++j) ++counts[cell[j] + 1];
      for (int c = 0; c < 1024; ++c) counts[c + 1] += counts[c];
      sorted[a].resize(n);
      for (int j = 0; j < n; ++j) sorted[a][counts[cell[j]]++] = j;
    }
    leaves = 0;
    start.assign(1, 0);
    Split(axes, 0, n);
    const int slots = start[leaves];
    x.resize(slots);
    y.resize(slots);
    z.resize(slots);
    index.assign(slots, -1);
    nearest.resize(slots);
    next.assign(start.begin(), start.end() - 1);
    for (int j = 0; j < n; ++j) index[next[leaf_of[j]]++] = j;  // leaf by leaf, in index order
    for (int s = 0; s < slots; ++s) {
      const int j = index[s] < 0 ? index[start[leaves - 1]] : index[s];  // padding: a copy
      x[s] = px[j];
      y[s] = py[j];
      z[s] = pz[j];
      nearest[s] = index[s] < 0 ? -1.0f : kInf;
    }
    const int padded = padded_leaves();
    for (std::vector<float>* v : {&lo_x, &lo_y, &lo_z}) v->assign(padded, kInf);
    for (std::vector<float>* v : {&hi_x, &hi_y, &hi_z}) v->assign(padded, -kInf);
    leaf_max.assign(padded, -1.0f);
    for (int l = 0; l < leaves; ++l) {  // the padding copies a point: the box is that of the points
      const int count = start[l + 1] - start[l];
      MinMax(x.data() + start[l], count, &lo_x[l], &hi_x[l]);
      MinMax(y.data() + start[l], count, &lo_y[l], &hi_y[l]);
      MinMax(z.data() + start[l], count, &lo_z[l], &hi_z[l]);
      leaf_max[l] = kInf;
    }
  }

  // Makes the padding slots NaN, whose distances pass no comparison (the nearest searches).
  void HidePadding() {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int s = start[leaves - 1]; s < start[leaves]; ++s) {
      if (index[s] < 0) x[s] = y[s] = z[s] = nan;
    }
  }

 private:
  // The smallest and largest of v[0, count), count >= 1, in lanes the compiler vectorises.
  static void MinMax(const float* v, int count, float* low, float* high) {
    constexpr int kLanes = 16;
    float lo[kLanes], hi[kLanes];
    for (int l = 0; l < kLanes; ++l) lo[l] = hi[l] = v[0];
    int j = 0;
    for (; j + kLanes <= count; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        lo[l] = v[j + l] < lo[l] ? v[j + l] : lo[l];
        hi[l] = v[j + l] > hi[l] ? v[j + l] : hi[l];
      }
    }
    for (; j < count; ++j) {
      lo[0] = v[j] < lo[0] ? v[j] : lo[0];
      hi[0] = v[j] > hi[0] ? v[j] : hi[0];
    }
    *low = *std::min_element(lo, lo + kLanes);
    *high = *std::max_element(hi, hi + kLanes);
  }

  // Splits the points sorted[*][begin, end) (the same set in each axis order) into leaves.
  void Split(const float* const* axes, int begin, int end) {
    const int size = end - begin;
    if (size <= kLeafMax) {
      for (int k = begin; k < end; ++k) leaf_of[sorted[0][k]] = leaves;
      start.push_back(start.back() + (size + kLeafPad - 1) / kLeafPad * kLeafPad);
      ++leaves;
      return;
    }
    int axis = 0;
    float widest = -1.0f;
    for (int a = 0; a < 3; ++a) {
      const float extent = axes[a][sorted[a][end - 1]] - axes[a][sorted[a][begin]];
      if (extent > widest) {
        widest = extent;
        axis = a;
      }
    }
    const int left = std::max(kLeafPad, (size / 2 + kLeafPad / 2) / kLeafPad * kLeafPad);
    int* side = cell.data();  // 1: the point goes left
    for (int k = begin; k < end; ++k) side[sorted[axis][k]] = k < begin + left;
    for (int a = 0; a < 3; ++a) {  // stable partitions keep the other orders sorted
      if (a == axis) continue;
      int* list = sorted[a].data();
      int to_left = begin, to_right = begin + left;
      for (int k = begin; k < end; ++k) {
        const int j = list[k], goes_left = side[j];
        buffer[goes_left ? to_left : to_right] = j;
        to_left += goes_left;
        to_right += 1 - goes_left;
      }
      std::copy(buffer.begin() + begin, buffer.begin() + end, list + begin);
    }
    Split(axes, begin, begin + left);
    Split(axes, begin + left, end);
  }
};

// ---------------------------------------------------------------- per-ISA search loops

// Plain C++ lanes of width 1: the portable path (and the reference for the SIMD ones).
struct ScalarSimd {
  static constexpr int kWidth = 1;
  using F = float;
  using I = int;
  static F load(const float* p) { return *p; }
  static void store(float* p, F v) { *p = v; }
  static void istore(int* p, I v) { *p = v; }
  static F set1(float v) { return v; }
  static I iset1(int v) { return v; }
  static I iota() { return 0; }
  static I iadd(I a, I b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F add(F a, F b) { return a + b; }
  static F mul(F a, F b) { return a * b; }
  static F fmadd(F a, F b, F c) { return a * b + c; }  // rounded twice (-ffp-contract=off)
  static F load_partial(const float* p, int) { return *p; }  // never partial: one lane
  static void store_partial(float* p, F v, int) { *p = v; }
  static F min(F a, F b) { return a < b ? a : b; }
  static F max(F a, F b) { return a > b ? a : b; }
  static float hmax(F a) { return a; }
  static float hmin(F a) { return a; }
  using M = bool;  // a per-lane comparison result
  static M lt(F a, F b) { return a < b; }
  static F select(M m, F a, F b) { return m ? b : a; }
  static I iselect(M m, I a, I b) { return m ? b : a; }
  static unsigned less_mask(F a, F b) { return a < b ? 1u : 0u; }
  static unsigned less_equal_mask(F a, F b) { return a <= b ? 1u : 0u; }
  static unsigned equal_mask(F a, F b) { return a == b ? 1u : 0u; }
  static void track_max(F t, I index, F* max, I* arg) {
    if (t > *max) {
      *max = t;
      *arg = index;
    }
  }
};

namespace scalar {
using Simd = ScalarSimd;
#include "point_kernels_simd.inc"
}  // namespace scalar

#ifdef JSNET_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma")
struct Avx2Simd {
  static constexpr int kWidth = 8;
  using F = __m256;
  using I = __m256i;
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static void istore(int* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static I iset1(int v) { return _mm256_set1_epi32(v); }
  static I iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static __m256i lane_mask(int lanes) {  // the first `lanes` lanes set
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static F load_partial(const float* p, int lanes) { return _mm256_maskload_ps(p, lane_mask(lanes)); }
  static void store_partial(float* p, F v, int lanes) { _mm256_maskstore_ps(p, lane_mask(lanes), v); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }  // a < b ? a : b
  static F max(F a, F b) { return _mm256_max_ps(a, b); }  // a > b ? a : b
  using M = __m256;  // a per-lane comparison result (all bits set where true)
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static F select(M m, F a, F b) { return _mm256_blendv_ps(a, b, m); }
  static I iselect(M m, I a, I b) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), m));
  }
  static float hmax(F a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
  }
  static float hmin(F a) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps(m, m, 1)));
  }
  static unsigned less_mask(F a, F b) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LT_OQ)));
  }
  static unsigned less_equal_mask(F a, F b) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LE_OQ)));
  }
  static unsigned equal_mask(F a, F b) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)));
  }
  static void track_max(F t, I index, F* max, I* arg) {
    const F greater = _mm256_cmp_ps(t, *max, _CMP_GT_OQ);
    *max = _mm256_blendv_ps(*max, t, greater);
    *arg = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(*arg), _mm256_castsi256_ps(index), greater));
  }
};
namespace avx2 {
using Simd = Avx2Simd;
#include "point_kernels_simd.inc"
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
struct Avx512Simd {
  static constexpr int kWidth = 16;
  using F = __m512;
  using I = __m512i;
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static void istore(int* p, I v) { _mm512_storeu_si512(p, v); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static I iset1(int v) { return _mm512_set1_epi32(v); }
  static I iota() { return _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static __mmask16 lane_mask(int lanes) { return static_cast<__mmask16>((1u << lanes) - 1); }
  static F load_partial(const float* p, int lanes) { return _mm512_maskz_loadu_ps(lane_mask(lanes), p); }
  static void store_partial(float* p, F v, int lanes) { _mm512_mask_storeu_ps(p, lane_mask(lanes), v); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }  // a < b ? a : b
  static F max(F a, F b) { return _mm512_max_ps(a, b); }  // a > b ? a : b
  using M = __mmask16;
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static F select(M m, F a, F b) { return _mm512_mask_blend_ps(m, a, b); }
  static I iselect(M m, I a, I b) { return _mm512_mask_blend_epi32(m, a, b); }
  static float hmax(F a) {
    const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    return Avx2Simd::hmax(_mm256_max_ps(_mm512_castps512_ps256(a), high));
  }
  static float hmin(F a) {
    const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    return Avx2Simd::hmin(_mm256_min_ps(_mm512_castps512_ps256(a), high));
  }
  static unsigned less_mask(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static unsigned less_equal_mask(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  static unsigned equal_mask(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static void track_max(F t, I index, F* max, I* arg) {
    const __mmask16 greater = _mm512_cmp_ps_mask(t, *max, _CMP_GT_OQ);
    *max = _mm512_mask_blend_ps(greater, *max, t);
    *arg = _mm512_mask_blend_epi32(greater, *arg, index);
  }
};
namespace avx512 {
using Simd = Avx512Simd;
#include "point_kernels_simd.inc"
}  // namespace avx512
#pragma GCC pop_options
#endif  // JSNET_X86_SIMD

using jsnet_cpu::Isa;
const Isa kIsa = jsnet_cpu::CpuIsa();

// From this many points and picks on the leaf partition pays for its build (measured at the
// S3DIS sizes: at 1024 -> 256 the two are about even, at 4096 -> 1024 it is 3-4x faster).
constexpr int kFpsLeavesMinPoints = 1024;
constexpr int kFpsLeavesMinPicks = 192;

// Scratch of one thread for FarthestPointSampleOne over up to n points.
struct FpsScratch {
  std::vector<float> nearest;
  PointLeaves leaves;
  explicit FpsScratch(int n) : nearest(n) {}
};

void FarthestPointSampleOne(const PointColumns& p, int n, int npoint, FpsScratch* s, int* out) {
  const float *x = p.x.data(), *y = p.y.data(), *z = p.z.data();
  if (n >= kFpsLeavesMinPoints && npoint >= kFpsLeavesMinPicks) {
    s->leaves.Build(x, y, z, n);
    switch (kIsa) {
#ifdef JSNET_X86_SIMD
      case Isa::kAvx512:
        return avx512::farthest_point_sample_leaves(&s->leaves, x, y, z, npoint, out);
      case Isa::kAvx2:
        return avx2::farthest_point_sample_leaves(&s->leaves, x, y, z, npoint, out);
#endif
      default:
        return scalar::farthest_point_sample_leaves(&s->leaves, x, y, z, npoint, out);
    }
  }
  switch (kIsa) {
#ifdef JSNET_X86_SIMD
    case Isa::kAvx512:
      return avx512::farthest_point_sample(x, y, z, n, npoint, s->nearest.data(), out);
    case Isa::kAvx2:
      return avx2::farthest_point_sample(x, y, z, n, npoint, s->nearest.data(), out);
#endif
    default:
      return scalar::farthest_point_sample(x, y, z, n, npoint, s->nearest.data(), out);
  }
}

// Scratch of one thread for NearestOne over up to n candidates.
struct NearestScratch {
  std::vector<float> d2, cand_d;
  std::vector<int> cand_i;
  explicit NearestScratch(int n) : d2(n + 16), cand_d(n + 16), cand_i(n + 16) {}
};

// Writes the k nearest of p's n points to q (sorted, ties by index); returns min(k, n).
int NearestOne(const PointColumns& p, int n, const float* q, int k, NearestScratch* s,
               float* out_d, int* out_i) {
  switch (kIsa) {
#ifdef JSNET_X86_SIMD
    case Isa::kAvx512:
      return avx512::nearest(p.x.data(), p.y.data(), p.z.data(), n, q, k, s->d2.data(),
                             s->cand_d.data(), s->cand_i.data(), out_d, out_i);
    case Isa::kAvx2:
      return avx2::nearest(p.x.data(), p.y.data(), p.z.data(), n, q, k, s->d2.data(),
                           s->cand_d.data(), s->cand_i.data(), out_d, out_i);
#endif
    default:
      return scalar::nearest(p.x.data(), p.y.data(), p.z.data(), n, q, k, s->d2.data(),
                             s->cand_d.data(), s->cand_i.data(), out_d, out_i);
  }
}

// The 3 nearest of p's n points to q (sorted, ties by index; missing slots +inf, 0).
void Nearest3One(const PointColumns& p, int n, const float* q, float* out_d, int* out_i) {
  switch (kIsa) {
#ifdef JSNET_X86_SIMD
    case Isa::kAvx512:
      return avx512::nearest3(p.x.data(), p.y.data(), p.z.data(), n, q, out_d, out_i);
    case Isa::kAvx2:
      return avx2::nearest3(p.x.data(), p.y.data(), p.z.data(), n, q, out_d, out_i);
#endif
    default:
      return scalar::nearest3(p.x.data(), p.y.data(), p.z.data(), n, q, out_d, out_i);
  }
}

// From this many candidates three_nn visits the leaves of a partition of them instead of every
// candidate (measured at batch 8, uniform clouds: 1024 -> 4096 about 2x faster, 32 -> 4096 1.5x).
// knn_point keeps `nearest`: at k = 16 and 32 the lists of k take as long as that search.
constexpr int kSearchLeavesMinPoints = 32;

// The leaf partition of one batch element's candidates for nearest_leaves, with its scratch.
struct SearchLeaves {
  PointLeaves leaves;
  std::vector<float> bounds;
  void Build(const PointColumns& p, int n) {
    leaves.Build(p.x.data(), p.y.data(), p.z.data(), n);
    leaves.HidePadding();
    bounds.resize(leaves.padded_leaves());
  }
};

// The k nearest of the partitioned points to q (see nearest_leaves); false where the k-th is +inf.
bool NearestLeavesOne(SearchLeaves* s, const float* q, int k, float* out_d, int* out_i) {
  switch (kIsa) {
#ifdef JSNET_X86_SIMD
    case Isa::kAvx512:
      return avx512::nearest_leaves(s->leaves, q, k, s->bounds.data(), out_d, out_i);
    case Isa::kAvx2:
      return avx2::nearest_leaves(s->leaves, q, k, s->bounds.data(), out_d, out_i);
#endif
    default:
      return scalar::nearest_leaves(s->leaves, q, k, s->bounds.data(), out_d, out_i);
  }
}

int BallOne(const PointColumns& p, int n, const float* q, float radius_sq, int nsample, int* out) {
  switch (kIsa) {
#ifdef JSNET_X86_SIMD
    case Isa::kAvx512:
      return avx512::ball(p.x.data(), p.y.data(), p.z.data(), n, q, radius_sq, nsample, out);
    case Isa::kAvx2:
      return avx2::ball(p.x.data(), p.y.data(), p.z.data(), n, q, radius_sq, nsample, out);
#endif
    default:
      return scalar::ball(p.x.data(), p.y.data(), p.z.data(), n, q, radius_sq, nsample, out);
  }
}

// d2[j] = squared distance from q to point j, for j in [0, n) (the k > kInsertionMaxK path).
void SquaredDistances(const PointColumns& p, int n, const float* q, float* d2) {
  for (int j = 0; j < n; ++j) {
    const float dx = p.x[j] - q[0], dy = p.y[j] - q[1], dz = p.z[j] - q[2];
    d2[j] = dx * dx + dy * dy + dz * dz;
  }
}

// gather_weight_net_sum's kernel and bias gradients are summed per block of this many rows, then
// over the blocks in order: the blocks depend on the number of rows alone, so the sums do not
// depend on the number of threads.
int64_t WeightNetRowsPerBlock(int64_t rows) { return std::max<int64_t>(64, (rows + 63) / 64); }

// Row stride of those per-block sums: whole vectors of every instruction set.
int WeightNetStride(int c) { return (c + 15) / 16 * 16; }

}  // namespace

extern "C" {

void jsnet_farthest_point_sample_cpu(int64_t begin, int64_t end, int n, int npoint,
                                     const float* xyz, int* idx) {
  FpsScratch scratch(n);
  for (int64_t b = begin; b < end; ++b) {
    const PointColumns p(xyz + b * n * 3, n);
    FarthestPointSampleOne(p, n, npoint, &scratch, idx + b * npoint);
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
  const float radius_sq = radius * radius;
  int64_t loaded_batch = -1;
  PointColumns p(nullptr, 0);
  for (int64_t q = begin; q < end; ++q) {
    const int64_t b = q / m;
    if (b != loaded_batch) {
      p = PointColumns(xyz + b * n * 3, n);
      loaded_batch = b;
    }
    int* out = idx + q * nsample;
    const int cnt = BallOne(p, n, new_xyz + q * 3, radius_sq, nsample, out);
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
  std::vector<float> d2;
  std::vector<int> order;
  NearestScratch scratch(n);
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
    if (k <= kInsertionMaxK) {
      NearestOne(p, n, c, k, &scratch, out_d, out_i);
    } else {
      d2.resize(n);
      SquaredDistances(p, n, c, d2.data());
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
  SearchLeaves leaves;
  const bool use_leaves = m >= kSearchLeavesMinPoints;
  int64_t loaded_batch = -1;
  PointColumns p(nullptr, 0);
  for (int64_t q = begin; q < end; ++q) {
    const int64_t b = q / n;
    if (b != loaded_batch) {
      p = PointColumns(xyz2 + b * m * 3, m);
      if (use_leaves) leaves.Build(p, m);
      loaded_batch = b;
    }
    if (use_leaves && NearestLeavesOne(&leaves, xyz1 + q * 3, 3, dist + q * 3, idx + q * 3)) continue;
    Nearest3One(p, m, xyz1 + q * 3, dist + q * 3, idx + q * 3);
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

void jsnet_gather_weight_net_sum_cpu(int64_t begin, int64_t end, int n, int c, int m,
                                     int nsample, int units, const float* points, const int* idx,
                                     const float* hidden, const float* kernel, const float* bias,
                                     float* out) {
  JSNET_FOR_ISA(weight_net_sum_rows)(begin, end, n, c, m, nsample, units, points, idx, hidden,
                                     kernel, bias, out);
}

void jsnet_gather_weight_net_sum_grad_points_cpu(int64_t begin, int64_t end, int n, int c, int m,
                                                 int nsample, int units, const float* grad_out,
                                                 const int* idx, const float* hidden,
                                                 const float* kernel, const float* bias,
                                                 float* grad_points) {
  JSNET_FOR_ISA(weight_net_scatter_batches)(begin, end, n, c, m, nsample, units, grad_out, idx,
                                            hidden, kernel, bias, grad_points);
}

int64_t jsnet_gather_weight_net_sum_grad_blocks_cpu(int b, int m) {
  const int64_t rows = static_cast<int64_t>(b) * m;
  return rows <= 0 ? 0 : (rows + WeightNetRowsPerBlock(rows) - 1) / WeightNetRowsPerBlock(rows);
}

int64_t jsnet_gather_weight_net_sum_grad_workspace_floats_cpu(int b, int m, int c, int units) {
  return jsnet_gather_weight_net_sum_grad_blocks_cpu(b, m) * (units + 1) * WeightNetStride(c);
}

void jsnet_gather_weight_net_sum_grad_weight_net_cpu(int64_t begin, int64_t end, int b, int n,
                                                     int c, int m, int nsample, int units,
                                                     const float* points, const int* idx,
                                                     const float* hidden, const float* kernel,
                                                     const float* grad_out, float* grad_hidden,
                                                     float* workspace) {
  const int64_t rows = static_cast<int64_t>(b) * m;
  JSNET_FOR_ISA(weight_net_grad_blocks)(begin, end, rows, WeightNetRowsPerBlock(rows), n, c, m,
                                        nsample, units, WeightNetStride(c), points, idx, hidden,
                                        kernel, grad_out, grad_hidden, workspace);
}

void jsnet_gather_weight_net_sum_grad_reduce_cpu(int64_t begin, int64_t end, int b, int c, int m,
                                                 int units, const float* workspace,
                                                 float* grad_kernel, float* grad_bias) {
  const int64_t blocks = jsnet_gather_weight_net_sum_grad_blocks_cpu(b, m);
  const int64_t stride = WeightNetStride(c);
  for (int64_t row = begin; row < end; ++row) {  // kernel rows 0 .. units - 1, then the bias
    float* out = row < units ? grad_kernel + row * c : grad_bias;
    std::fill(out, out + c, 0.0f);
    for (int64_t block = 0; block < blocks; ++block) {
      const float* partial = workspace + (block * (units + 1) + row) * stride;
      for (int ch = 0; ch < c; ++ch) out[ch] += partial[ch];
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
