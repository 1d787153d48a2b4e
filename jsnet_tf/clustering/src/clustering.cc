// Native instance post-processing of JSNet: mean-shift (sklearn's MeanShift with bin seeding)
// and the room merger (SGPN's BlockMerging without its fixed tables).
//
// Built into jsnet_tf/clustering/lib/ by `python -m jsnet_tf.clustering.build`; the Python layer
// (jsnet_tf/clustering/postprocess.py) validates every input before calling in here, the checks
// below are a safety net that keeps a bad call from corrupting memory.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// ------------------------------------------------------------------------------------------
// Mean-shift
// ------------------------------------------------------------------------------------------

// The points within a ball: how many, and a 128-bit fingerprint of the set (sums of per-point
// hashes), so that equal sets are recognised across seeds.
struct BallSum {
  int64_t count = 0;
  uint64_t hash_a = 0;
  uint64_t hash_b = 0;
};

// Measured on 5250-point blocks of trained-looking embeddings: with vectorised scans, large
// leaves (few nodes to test, more points to scan) are fastest.
constexpr int64_t kLeafSize = 256;

// The points of a kd-tree, per dimension (contiguous over points) in tree order.
struct PointColumns {
  const double* coords;   // [dim][n]
  const int64_t* fixed;   // [dim][n], fixed point
  const uint64_t* hash_a;
  const uint64_t* hash_b;
  int64_t n;
};

// Adds the points [start, end) within squared distance `radius2` of `query` to `acc` / `result`.
// Branch-free (whether a point is inside is close to a coin toss near the boundary), one
// dimension at a time so that every loop vectorises. Leaves of identical points can exceed
// kLeafSize, hence the chunks.
template <int D>
inline __attribute__((always_inline)) void scan_points(const PointColumns& p, int dim, int64_t start, int64_t end,
                                                       const double* query, double radius2, int64_t* acc,
                                                       BallSum& result) {
  if constexpr (D > 0) dim = D;
  for (int64_t chunk = start; chunk < end; chunk += kLeafSize) {
    const int64_t len = std::min(kLeafSize, end - chunk);
    double dist2[kLeafSize];
    for (int64_t i = 0; i < len; ++i) {
      const double diff = query[0] - p.coords[chunk + i];
      dist2[i] = diff * diff;
    }
    for (int d = 1; d < dim; ++d) {
      const double q = query[d];
      const double* x = &p.coords[d * p.n + chunk];
      for (int64_t i = 0; i < len; ++i) {
        const double diff = q - x[i];
        dist2[i] += diff * diff;
      }
    }
    int64_t mask[kLeafSize];
    int64_t count = 0;
    for (int64_t i = 0; i < len; ++i) {
      mask[i] = dist2[i] <= radius2 ? int64_t{-1} : int64_t{0};
      count -= mask[i];
    }
    for (int d = 0; d < dim; ++d) {
      const int64_t* f = &p.fixed[d * p.n + chunk];
      int64_t total = 0;
      for (int64_t i = 0; i < len; ++i) total += f[i] & mask[i];
      acc[d] += total;
    }
    uint64_t hash_a = 0, hash_b = 0;
    for (int64_t i = 0; i < len; ++i) {
      hash_a += p.hash_a[chunk + i] & static_cast<uint64_t>(mask[i]);
      hash_b += p.hash_b[chunk + i] & static_cast<uint64_t>(mask[i]);
    }
    result.count += count;
    result.hash_a += hash_a;
    result.hash_b += hash_b;
  }
}

using ScanFunction = void (*)(const PointColumns&, int, int64_t, int64_t, const double*, double, int64_t*, BallSum&);

template <int D>
void scan_points_baseline(const PointColumns& p, int dim, int64_t start, int64_t end, const double* query,
                          double radius2, int64_t* acc, BallSum& result) {
  scan_points<D>(p, dim, start, end, query, radius2, acc, result);
}

// The same code compiled for AVX2 (4 doubles a vector instead of 2), chosen at run time on CPUs
// that have it. No FMA: results are bit-identical to the baseline's.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define JSNET_CLUSTERING_AVX2 1
template <int D>
__attribute__((target("avx2"))) void scan_points_avx2(const PointColumns& p, int dim, int64_t start, int64_t end,
                                                      const double* query, double radius2, int64_t* acc,
                                                      BallSum& result) {
  scan_points<D>(p, dim, start, end, query, radius2, acc, result);
}
std::atomic<bool> use_avx2{__builtin_cpu_supports("avx2") != 0};
#else
std::atomic<bool> use_avx2{false};
#endif

template <int D>
ScanFunction scan_function() {
#ifdef JSNET_CLUSTERING_AVX2
  if (use_avx2.load()) return &scan_points_avx2<D>;
#endif
  return &scan_points_baseline<D>;
}

// A kd-tree over the embeddings (tight boxes and bounding spheres per node), for the sums of
// the points within the bandwidth. Sums are taken in fixed point (int64, 2^-scale units, exact and independent
// of order), so the mean of a set of points is one and the same number whichever query found
// the set, and a node entirely inside the ball adds its precomputed sum. Distances use the
// coordinates as given (double). Coordinates are stored per dimension (contiguous over points)
// so the scan of a leaf vectorises. D > 0 fixes the dimension at compile time; 0: at run time.
template <int D>
class KdTree {
 public:
  KdTree(const double* points, int64_t n, int dim) : n_(n), dim_(dim) {
    std::vector<int64_t> order(n);
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    nodes_.reserve(2 * (n / kLeafSize + 1));
    build(order, points, 0, n, 0);

    // Fixed point with room for the sum of all n points: |x| 2^scale n < 2^62.
    double largest = 0.0;
    for (int64_t i = 0; i < n * dim; ++i) largest = std::max(largest, std::fabs(points[i]));
    int exponent = 0, count_bits = 0;
    std::frexp(largest, &exponent);  // largest < 2^exponent
    std::frexp(static_cast<double>(n), &count_bits);  // n < 2^count_bits
    scale_ = largest > 0.0 ? std::max(-1000, std::min(1000, 62 - exponent - count_bits)) : 0;
    const double unit = std::ldexp(1.0, scale_);

    coords_.resize(n * dim);
    fixed_.resize(n * dim);
    hash_a_.resize(n);
    hash_b_.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      for (int d = 0; d < dim; ++d) {
        const double x = points[order[i] * dim + d];
        coords_[d * n + i] = x;
        fixed_[d * n + i] = static_cast<int64_t>(std::nearbyint(x * unit));
      }
      hash_a_[i] = splitmix64(static_cast<uint64_t>(order[i]));
      hash_b_[i] = splitmix64(static_cast<uint64_t>(order[i]) ^ 0xD6E8FEB86659FD93ULL);
    }
    columns_ = PointColumns{coords_.data(), fixed_.data(), hash_a_.data(), hash_b_.data(), n};
    node_sums_.assign(nodes_.size() * dim, 0);
    node_hashes_.assign(nodes_.size() * 2, 0);
    for (size_t k = 0; k < nodes_.size(); ++k) {
      for (int64_t i = nodes_[k].start; i < nodes_[k].end; ++i) {
        for (int d = 0; d < dim; ++d) node_sums_[k * dim + d] += fixed_[d * n + i];
        node_hashes_[2 * k] += hash_a_[i];
        node_hashes_[2 * k + 1] += hash_b_[i];
      }
    }
    // Bounding spheres about the nodes' centroids: a query near the middle of a cluster takes
    // whole nodes, which in 5-d a box test rarely allows.
    sphere_centre_.assign(nodes_.size() * dim, 0.0);
    sphere_radius_.assign(nodes_.size(), 0.0);
    for (size_t k = 0; k < nodes_.size(); ++k) {
      const int64_t count = nodes_[k].end - nodes_[k].start;
      double* centre = &sphere_centre_[k * dim];
      for (int d = 0; d < dim; ++d) centre[d] = mean(node_sums_[k * dim + d], count);
      double radius2 = 0.0;
      for (int64_t i = nodes_[k].start; i < nodes_[k].end; ++i) {
        double dist2 = 0.0;
        for (int d = 0; d < dim; ++d) {
          const double diff = coords_[d * n + i] - centre[d];
          dist2 += diff * diff;
        }
        radius2 = std::max(radius2, dist2);
      }
      // A hair wider, so that rounding never leaves a point outside its node's sphere.
      sphere_radius_[k] = std::sqrt(radius2) * (1.0 + 1e-12);
    }
  }

  int dim() const {
    if constexpr (D > 0) {
      return D;
    } else {
      return dim_;
    }
  }

  // The mean of points whose fixed-point coordinate sum is `sum`.
  double mean(int64_t sum, int64_t count) const {
    return std::ldexp(static_cast<double>(sum) / static_cast<double>(count), -scale_);
  }

  // Sums the points within squared distance `radius2` of `query` into `sum` (dim fixed-point
  // values). Inclusive boundary, like sklearn's radius_neighbors.
  BallSum ball_sum(const double* query, double radius2, int64_t* sum) const {
    const int dim = this->dim();
    int64_t local[D > 0 ? D : 1];
    int64_t* acc = D > 0 ? local : sum;
    std::fill(acc, acc + dim, 0);
    BallSum result;
    int32_t stack[256];
    int top = 0;
    stack[top++] = 0;
    while (top > 0) {
      const int32_t index = stack[--top];
      const Node& node = nodes_[index];
      // The bounding sphere first: it settles most nodes (wholly outside or inside the ball).
      double centre2 = 0.0;
      for (int d = 0; d < dim; ++d) {
        const double diff = query[d] - sphere_centre_[index * dim + d];
        centre2 += diff * diff;
      }
      const double centre = std::sqrt(centre2), sphere = sphere_radius_[index];
      if (centre > sphere && (centre - sphere) * (centre - sphere) > radius2) continue;
      if ((centre + sphere) * (centre + sphere) <= radius2) {
        for (int d = 0; d < dim; ++d) acc[d] += node_sums_[index * dim + d];
        result.count += node.end - node.start;
        result.hash_a += node_hashes_[2 * index];
        result.hash_b += node_hashes_[2 * index + 1];
        continue;
      }
      const double* lo = &box_lo_[index * dim];
      const double* hi = &box_hi_[index * dim];
      double near2 = 0.0;
      for (int d = 0; d < dim; ++d) {
        const double below = lo[d] - query[d], above = query[d] - hi[d];
        const double gap = below > 0.0 ? below : (above > 0.0 ? above : 0.0);
        near2 += gap * gap;
      }
      if (near2 > radius2) continue;
      if (node.left < 0) {
        scan_(columns_, dim, node.start, node.end, query, radius2, acc, result);
      } else {
        stack[top++] = node.right;
        stack[top++] = node.left;
      }
    }
    if (D > 0) std::copy(acc, acc + dim, sum);
    return result;
  }

 private:
  struct Node {
    int64_t start, end;
    int32_t left, right;  // -1 for a leaf
  };

  int32_t build(std::vector<int64_t>& order, const double* points, int64_t start, int64_t end, int depth) {
    const int dim = this->dim();
    const int32_t index = static_cast<int32_t>(nodes_.size());
    nodes_.push_back(Node{start, end, -1, -1});
    box_lo_.resize(box_lo_.size() + dim, INFINITY);
    box_hi_.resize(box_hi_.size() + dim, -INFINITY);
    double* lo = &box_lo_[index * dim];
    double* hi = &box_hi_[index * dim];
    for (int64_t i = start; i < end; ++i) {
      const double* p = points + order[i] * dim;
      for (int d = 0; d < dim; ++d) {
        lo[d] = std::min(lo[d], p[d]);
        hi[d] = std::max(hi[d], p[d]);
      }
    }
    int split = 0;
    for (int d = 1; d < dim; ++d) {
      if (hi[d] - lo[d] > hi[split] - lo[split]) split = d;
    }
    if (end - start <= kLeafSize || !(hi[split] > lo[split])) return index;
    // Split at the middle of the box (clusters tend to lie on one side of it), keeping the
    // input order within each side; at the median when that leaves one side nearly empty or
    // the tree grows deep (median splits halve: the depth, and the query stack, stay < 256).
    const double middle = 0.5 * (lo[split] + hi[split]);
    scratch_.resize(end - start);
    for (int64_t i = start; i < end; ++i) scratch_[i - start] = {points[order[i] * dim + split], order[i]};
    auto below = std::stable_partition(scratch_.begin(), scratch_.end(),
                                       [middle](const std::pair<double, int64_t>& p) { return p.first < middle; });
    int64_t mid = start + (below - scratch_.begin());
    if (std::min(mid - start, end - mid) < (end - start) / 8 || depth >= 128) {
      mid = start + (end - start) / 2;
      std::nth_element(scratch_.begin(), scratch_.begin() + (mid - start), scratch_.end());
    }
    for (int64_t i = start; i < end; ++i) order[i] = scratch_[i - start].second;
    const int32_t left = build(order, points, start, mid, depth + 1);
    const int32_t right = build(order, points, mid, end, depth + 1);
    nodes_[index].left = left;
    nodes_[index].right = right;
    return index;
  }

  int64_t n_;
  int dim_;
  int scale_ = 0;
  std::vector<double> coords_;   // [dim][n], tree order
  std::vector<int64_t> fixed_;   // the same in fixed point
  std::vector<uint64_t> hash_a_, hash_b_;
  std::vector<Node> nodes_;
  std::vector<double> box_lo_, box_hi_;     // [node][dim]
  std::vector<int64_t> node_sums_;          // [node][dim], fixed point
  std::vector<uint64_t> node_hashes_;       // [node][2]
  std::vector<double> sphere_centre_;       // [node][dim]
  std::vector<double> sphere_radius_;       // [node]
  PointColumns columns_{};
  ScanFunction scan_ = scan_function<D>();
  std::vector<std::pair<double, int64_t>> scratch_;  // used while building
};

struct SetKey {
  uint64_t a, b;
  bool operator==(const SetKey& other) const { return a == other.a && b == other.b; }
};

struct SetKeyHash {
  size_t operator()(const SetKey& key) const { return static_cast<size_t>(key.a ^ (key.b * 0x9E3779B97F4A7C15ULL)); }
};

// sklearn's get_bin_seeds with min_bin_freq=1: one seed per occupied cell of a grid of pitch
// `bandwidth` (coordinates rounded half to even, as np.round), in order of first occurrence;
// the points themselves when every point has a cell of its own. `seed_of_point` gets the seed
// whose cell holds each point.
std::vector<double> bin_seeds(const double* points, int64_t n, int dim, double bandwidth,
                              std::vector<int64_t>& seed_of_point) {
  std::vector<double> keys(n * dim);
  for (int64_t i = 0; i < n * dim; ++i) keys[i] = std::nearbyint(points[i] / bandwidth) + 0.0;  // -0 -> +0
  size_t capacity = 16;
  while (capacity < 2 * static_cast<size_t>(n)) capacity *= 2;
  std::vector<int64_t> table(capacity, -1);  // seed index of the cell hashed there
  std::vector<int64_t> first;                // first point of each seed's cell
  seed_of_point.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const double* key = &keys[i * dim];
    uint64_t h = 0;
    for (int d = 0; d < dim; ++d) {
      uint64_t bits;
      std::memcpy(&bits, &key[d], sizeof bits);
      h = splitmix64(h ^ bits);
    }
    size_t slot = h & (capacity - 1);
    while (table[slot] >= 0 && !std::equal(key, key + dim, &keys[first[table[slot]] * dim])) {
      slot = (slot + 1) & (capacity - 1);
    }
    if (table[slot] < 0) {
      table[slot] = static_cast<int64_t>(first.size());
      first.push_back(i);
    }
    seed_of_point[i] = table[slot];
  }
  if (static_cast<int64_t>(first.size()) == n) {
    for (int64_t i = 0; i < n; ++i) seed_of_point[i] = i;
    return std::vector<double>(points, points + n * dim);
  }
  std::vector<double> seeds(first.size() * dim);
  for (size_t s = 0; s < first.size(); ++s) {
    for (int d = 0; d < dim; ++d) seeds[s * dim + d] = keys[first[s] * dim + d] * bandwidth;
  }
  return seeds;
}

// Where the hill climbs ended: a mode and the number of points within the bandwidth of the
// previous position (sklearn's "intensity"); intensity 0 = the seed had no point near it.
struct Modes {
  std::vector<double> centres;
  std::vector<int64_t> intensity;
};

// Climbs every seed like sklearn's _mean_shift_single_seed. The position after a step is a
// function of the set of points that produced it, so once a climb reaches a set that an
// earlier climb has left (without stopping there), it ends where that climb ended; `memo`
// remembers those ends (and how many further steps they took, for max_iter).
template <class Tree>
std::vector<int32_t> climb(const Tree& tree, const std::vector<double>& seeds, int dim, double bandwidth,
                           int64_t max_iter, Modes& modes) {
  struct Memo {
    int32_t mode;
    int64_t steps;
  };
  const double radius2 = bandwidth * bandwidth;
  const double stop = 1e-3 * bandwidth;
  const int64_t n_seeds = static_cast<int64_t>(seeds.size()) / dim;
  std::unordered_map<SetKey, Memo, SetKeyHash> memo;
  std::vector<std::pair<SetKey, int64_t>> chain;
  std::vector<double> position(dim), mean(dim);
  std::vector<int64_t> sum(dim);
  std::vector<int32_t> seed_mode(n_seeds);
  for (int64_t s = 0; s < n_seeds; ++s) {
    std::copy(&seeds[s * dim], &seeds[s * dim] + dim, position.begin());
    chain.clear();
    int64_t completed = 0;
    int32_t mode = -1;
    int64_t end_completed = 0;
    bool capped = false;
    while (true) {
      const BallSum ball = tree.ball_sum(position.data(), radius2, sum.data());
      if (ball.count == 0) {
        mode = static_cast<int32_t>(modes.intensity.size());
        modes.centres.insert(modes.centres.end(), position.begin(), position.end());
        modes.intensity.push_back(0);
        end_completed = completed;
        break;
      }
      double moved2 = 0.0;
      for (int d = 0; d < dim; ++d) {
        mean[d] = tree.mean(sum[d], ball.count);
        const double diff = mean[d] - position[d];
        moved2 += diff * diff;
      }
      if (std::sqrt(moved2) <= stop || completed == max_iter) {
        capped = !(std::sqrt(moved2) <= stop);
        mode = static_cast<int32_t>(modes.intensity.size());
        modes.centres.insert(modes.centres.end(), mean.begin(), mean.end());
        modes.intensity.push_back(ball.count);
        end_completed = completed;
        break;
      }
      const SetKey key{ball.hash_a, ball.hash_b ^ splitmix64(static_cast<uint64_t>(ball.count))};
      const auto known = memo.find(key);
      if (known != memo.end() && completed + 1 + known->second.steps <= max_iter) {
        mode = known->second.mode;
        end_completed = completed + 1 + known->second.steps;
        break;
      }
      chain.emplace_back(key, completed);
      completed += 1;
      position.swap(mean);
    }
    if (!capped) {
      for (const auto& [key, at] : chain) memo[key] = Memo{mode, end_completed - (at + 1)};
    }
    seed_mode[s] = mode;
  }
  return seed_mode;
}

struct MeanShiftOutput {
  std::vector<int64_t> labels;
  std::vector<double> centres;
};

template <int D>
MeanShiftOutput mean_shift(const double* points, int64_t n, int dim_at_run_time, double bandwidth, int64_t max_iter) {
  const int dim = D > 0 ? D : dim_at_run_time;
  const KdTree<D> tree(points, n, dim);
  std::vector<int64_t> seed_of_point;
  Modes modes;
  std::vector<int32_t> mode_of_seed =
      climb(tree, bin_seeds(points, n, dim, bandwidth, seed_of_point), dim, bandwidth, max_iter, modes);
  if (std::none_of(modes.intensity.begin(), modes.intensity.end(), [](int64_t c) { return c > 0; })) {
    // sklearn gives up here ("No point was within bandwidth ... of any seed"); every point is
    // within the bandwidth of itself, so seeding from the points always finds modes.
    modes = Modes();
    mode_of_seed = climb(tree, std::vector<double>(points, points + n * dim), dim, bandwidth, max_iter, modes);
    for (int64_t i = 0; i < n; ++i) seed_of_point[i] = i;
  }
  const int64_t n_modes = static_cast<int64_t>(modes.intensity.size());
  const double* c = modes.centres.data();
  auto distance2 = [dim](const double* a, const double* b) {
    double sum = 0.0;
    for (int d = 0; d < dim; ++d) {
      const double diff = a[d] - b[d];
      sum += diff * diff;
    }
    return sum;
  };

  // Strongest modes first (ties: larger coordinates first), as sklearn sorts its centres.
  std::vector<int64_t> order;
  for (int64_t m = 0; m < n_modes; ++m) {
    if (modes.intensity[m] > 0) order.push_back(m);
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (modes.intensity[a] != modes.intensity[b]) return modes.intensity[a] > modes.intensity[b];
    return std::lexicographical_compare(c + b * dim, c + (b + 1) * dim, c + a * dim, c + (a + 1) * dim);
  });

  // A mode within the bandwidth of a stronger kept mode is a duplicate of it.
  const double radius2 = bandwidth * bandwidth;
  MeanShiftOutput out;
  std::vector<int64_t> centre_of_mode(n_modes, 0);  // the kept centre standing for each mode
  int64_t kept = 0;
  for (int64_t m : order) {
    int64_t same = -1;
    for (int64_t k = 0; k < kept && same < 0; ++k) {
      if (distance2(c + m * dim, &out.centres[k * dim]) <= radius2) same = k;
    }
    if (same < 0) {
      out.centres.insert(out.centres.end(), c + m * dim, c + (m + 1) * dim);
      same = kept++;
    }
    centre_of_mode[m] = same;
  }

  // Every point joins its nearest centre (cluster_all=True; ties to the stronger centre). The
  // centre its cell's seed climbed to is a close first guess; centre k can only be nearer than
  // a guess g at distance r when |c_k - c_g| <= 2 r, so only those are measured. (With very
  // many centres, from scattered embeddings, every centre is measured instead.)
  const double* centre = out.centres.data();
  const bool guided = kept <= 256;
  std::vector<double> apart(guided ? kept * kept : 0);
  std::vector<std::vector<int64_t>> by_distance(guided ? kept : 0);
  for (int64_t g = 0; g < static_cast<int64_t>(by_distance.size()); ++g) {
    for (int64_t k = 0; k < kept; ++k) apart[g * kept + k] = std::sqrt(distance2(centre + g * dim, centre + k * dim));
    for (int64_t k = 0; k < kept; ++k) {
      if (k != g) by_distance[g].push_back(k);
    }
    std::stable_sort(by_distance[g].begin(), by_distance[g].end(),
                     [&](int64_t a, int64_t b) { return apart[g * kept + a] < apart[g * kept + b]; });
  }
  out.labels.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const double* p = points + i * dim;
    const int64_t guess = guided ? centre_of_mode[mode_of_seed[seed_of_point[i]]] : 0;
    int64_t best = guess;
    double best2 = distance2(p, centre + guess * dim);
    auto consider = [&](int64_t k) {
      const double dist2 = distance2(p, centre + k * dim);
      if (dist2 < best2 || (dist2 == best2 && k < best)) {
        best2 = dist2;
        best = k;
      }
    };
    if (guided) {
      // A little slack over 2 r keeps rounding in the distances from skipping a tie.
      const double reach = 2.0 * std::sqrt(best2) * (1.0 + 1e-9) + 1e-300;
      for (int64_t k : by_distance[guess]) {
        if (apart[guess * kept + k] > reach) break;
        consider(k);
      }
    } else {
      for (int64_t k = 1; k < kept; ++k) consider(k);
    }
    out.labels[i] = best;
  }
  return out;
}

py::tuple mean_shift_py(py::array_t<double, py::array::c_style | py::array::forcecast> points, double bandwidth,
                        int64_t max_iter) {
  if (points.ndim() != 2) throw std::invalid_argument("mean_shift: embeddings must be 2-d (points, dims)");
  const int64_t n = points.shape(0);
  const int dim = static_cast<int>(points.shape(1));
  if (n == 0 || dim == 0) throw std::invalid_argument("mean_shift: no embeddings to cluster");
  if (n >= (int64_t{1} << 30)) throw std::invalid_argument("mean_shift: more than 2^30 points");
  if (!(bandwidth > 0.0) || !std::isfinite(bandwidth)) throw std::invalid_argument("mean_shift: bandwidth must be positive");
  if (max_iter < 0) throw std::invalid_argument("mean_shift: max_iter must be >= 0");
  const double* data = points.data();
  for (int64_t i = 0; i < n * dim; ++i) {
    if (!std::isfinite(data[i])) throw std::invalid_argument("mean_shift: embeddings must be finite");
  }
  MeanShiftOutput out;
  {
    py::gil_scoped_release release;
    switch (dim) {
      case 1: out = mean_shift<1>(data, n, dim, bandwidth, max_iter); break;
      case 2: out = mean_shift<2>(data, n, dim, bandwidth, max_iter); break;
      case 3: out = mean_shift<3>(data, n, dim, bandwidth, max_iter); break;
      case 4: out = mean_shift<4>(data, n, dim, bandwidth, max_iter); break;
      case 5: out = mean_shift<5>(data, n, dim, bandwidth, max_iter); break;
      case 6: out = mean_shift<6>(data, n, dim, bandwidth, max_iter); break;
      case 8: out = mean_shift<8>(data, n, dim, bandwidth, max_iter); break;
      default: out = mean_shift<0>(data, n, dim, bandwidth, max_iter); break;
    }
  }
  const int64_t k = static_cast<int64_t>(out.centres.size()) / dim;
  py::array_t<int64_t> labels(n);
  std::copy(out.labels.begin(), out.labels.end(), labels.mutable_data());
  py::array_t<double> centres({k, static_cast<int64_t>(dim)});
  std::copy(out.centres.begin(), out.centres.end(), centres.mutable_data());
  return py::make_tuple(labels, centres);
}

// ------------------------------------------------------------------------------------------
// Room merging
// ------------------------------------------------------------------------------------------

// Open-addressing map from a voxel cell (non-negative key) to the room instance and class that
// first claimed it. Only cells that points fall into are stored.
class CellTable {
 public:
  CellTable() { rehash(1 << 12); }

  int64_t size() const { return size_; }

  // Slot of `cell`, or -1 when it is empty.
  int64_t find(int64_t cell) const {
    for (uint64_t slot = home(cell);; slot = (slot + 1) & mask_) {
      if (keys_[slot] == cell) return static_cast<int64_t>(slot);
      if (keys_[slot] < 0) return -1;
    }
  }

  void insert(int64_t cell, int64_t room, int64_t cls) {
    if (2 * (size_ + 1) > static_cast<int64_t>(keys_.size())) rehash(2 * keys_.size());
    uint64_t slot = home(cell);
    while (keys_[slot] >= 0) slot = (slot + 1) & mask_;
    keys_[slot] = cell;
    rooms_[slot] = room;
    classes_[slot] = cls;
    size_ += 1;
  }

  int64_t room(int64_t slot) const { return rooms_[slot]; }
  int64_t cls(int64_t slot) const { return classes_[slot]; }

 private:
  uint64_t home(int64_t cell) const { return splitmix64(static_cast<uint64_t>(cell)) & mask_; }

  void rehash(size_t capacity) {
    std::vector<int64_t> keys(capacity, -1), rooms(capacity), classes(capacity);
    keys.swap(keys_);
    rooms.swap(rooms_);
    classes.swap(classes_);
    mask_ = capacity - 1;
    size_ = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] >= 0) insert(keys[i], rooms[i], classes[i]);
    }
  }

  std::vector<int64_t> keys_, rooms_, classes_;
  uint64_t mask_ = 0;
  int64_t size_ = 0;
};

// BlockMerging: block clusters join the room instance they overlap most in cells of their own
// class, or start a new one; each cell keeps the first instance written into it.
class RoomMerger {
 public:
  RoomMerger(int64_t min_overlap, int64_t min_points) : min_overlap_(min_overlap), min_points_(min_points) {}

  int64_t max_id() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return max_id_;
  }
  int64_t num_cells() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cells_.size();
  }

  py::array_t<int64_t> merge(py::array_t<int64_t, py::array::c_style | py::array::forcecast> cells,
                             py::array_t<int64_t, py::array::c_style | py::array::forcecast> labels,
                             py::array_t<int64_t, py::array::c_style | py::array::forcecast> classes) {
    if (cells.ndim() != 1 || labels.ndim() != 1 || classes.ndim() != 1 || cells.shape(0) != labels.shape(0)) {
      throw std::invalid_argument("RoomMerger.merge: cells and labels must be 1-d of one length, classes 1-d");
    }
    const int64_t n = cells.shape(0), k = classes.shape(0);
    const int64_t* cell = cells.data();
    const int64_t* label = labels.data();
    const int64_t* cls = classes.data();
    for (int64_t i = 0; i < n; ++i) {
      if (label[i] < -1 || label[i] >= k) throw std::invalid_argument("RoomMerger.merge: label out of range");
      if (cell[i] < 0) throw std::invalid_argument("RoomMerger.merge: negative cell");
    }
    py::array_t<int64_t> out(n);
    int64_t* room_of_point = out.mutable_data();
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      merge_block(n, cell, label, k, cls, room_of_point);
    }
    return out;
  }

  py::array_t<int64_t> assign(py::array_t<int64_t, py::array::c_style | py::array::forcecast> cells) const {
    if (cells.ndim() != 1) throw std::invalid_argument("RoomMerger.assign: cells must be 1-d");
    const int64_t n = cells.shape(0);
    const int64_t* cell = cells.data();
    py::array_t<int64_t> out(n);
    int64_t* room = out.mutable_data();
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t slot = cells_.find(cell[i]);
        room[i] = slot < 0 ? -1 : cells_.room(slot);
      }
    }
    return out;
  }

 private:
  void merge_block(int64_t n, const int64_t* cell, const int64_t* label, int64_t k, const int64_t* cls, int64_t* out) {
    // Overlaps (cluster, room instance) in cells already claimed by the same class.
    std::vector<int64_t> size(k, 0);
    std::vector<std::pair<int64_t, int64_t>> overlaps;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t l = label[i];
      if (l < 0) continue;
      size[l] += 1;
      const int64_t slot = cells_.find(cell[i]);
      if (slot >= 0 && cells_.cls(slot) == cls[l]) overlaps.emplace_back(l, cells_.room(slot));
    }
    std::sort(overlaps.begin(), overlaps.end());
    // Instance of the largest overlap, the lowest id among equals; 0 when nothing overlaps
    // (the original's argmax over an all-zero row).
    std::vector<int64_t> target(k, 0), best(k, 0);
    for (size_t i = 0; i < overlaps.size();) {
      size_t j = i;
      while (j < overlaps.size() && overlaps[j] == overlaps[i]) ++j;
      const int64_t l = overlaps[i].first, count = static_cast<int64_t>(j - i);
      if (count > best[l]) {
        best[l] = count;
        target[l] = overlaps[i].second;
      }
      i = j;
    }
    int64_t next = max_id_;
    for (int64_t l = 0; l < k; ++l) {
      if (best[l] < min_overlap_ && size[l] >= min_points_) target[l] = ++next;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t l = label[i];
      out[i] = -1;
      if (l < 0 || cells_.find(cell[i]) >= 0) continue;
      cells_.insert(cell[i], target[l], cls[l]);
      max_id_ = std::max(max_id_, target[l]);
      out[i] = target[l];
    }
  }

  mutable std::mutex mutex_;  // merge and assign run without the GIL
  CellTable cells_;
  int64_t max_id_ = -1;  // highest instance id written into the grid (ids not written are reused)
  int64_t min_overlap_, min_points_;
};

}  // namespace

PYBIND11_MODULE(_clustering, m) {
  m.doc() = "Native mean-shift and room merging for JSNet's instance post-processing.";
  m.def(
      "vector_isa", []() { return use_avx2.load() ? "avx2" : "baseline"; },
      "The instruction set the mean-shift point scans use: avx2 where the CPU has it.");
  m.def(
      "set_vector_isa",
      [](const std::string& isa) {
        if (isa != "avx2" && isa != "baseline") throw std::invalid_argument("isa must be 'avx2' or 'baseline'");
#ifdef JSNET_CLUSTERING_AVX2
        if (isa == "avx2" && !__builtin_cpu_supports("avx2")) throw std::invalid_argument("this CPU has no AVX2");
#else
        if (isa == "avx2") throw std::invalid_argument("built without the AVX2 path");
#endif
        use_avx2.store(isa == "avx2");
      },
      py::arg("isa"), "Chooses the point-scan code for later calls (for tests: both give the same bits).");
  m.def("mean_shift", &mean_shift_py, py::arg("points"), py::arg("bandwidth"), py::arg("max_iter"),
        "(labels int64 (N,), centres float64 (K, D)) of sklearn's MeanShift(bin_seeding=True).");
  py::class_<RoomMerger>(m, "RoomMerger")
      .def(py::init<int64_t, int64_t>(), py::arg("min_overlap"), py::arg("min_points"))
      .def("merge", &RoomMerger::merge, py::arg("cells"), py::arg("labels"), py::arg("classes"))
      .def("assign", &RoomMerger::assign, py::arg("cells"))
      .def_property_readonly("max_id", &RoomMerger::max_id)
      .def_property_readonly("num_cells", &RoomMerger::num_cells);
}
