// HNSW memory index (see memory_index.h). hnswlib (Debian libhnswlib-dev, header-only) provides
// the graph; the distance is our own dispatching dot product.
//
// Maximum inner product is not a metric search: a graph built on -q.k directly links everything
// to a few long keys, and recall collapses on keys whose norms vary (measured: recall@32 0.49 at
// any beam width on anisotropic keys). So keys are lifted to the sphere of radius phi >= every
// key norm: k' = [k, sqrt(phi^2 - |k|^2)], queries q' = [q, 0] (Bachrach et al. 2014, "Speeding
// up the Xbox recommender system using a Euclidean transformation for inner-product spaces").
// Then |q' - k'|^2 = |q|^2 + phi^2 - 2 q.k: the nearest k' is the largest q.k, and between two
// keys |a' - b'|^2 = 2 phi^2 - 2 a'.b'. Every distance hnswlib compares is thus an increasing
// affine function of -x'.y', which is what the graph uses (and q'.k' = q.k exactly).
//
// phi is a power of 2^(1/4) at least 1.05 x the largest key norm of a head; a key longer than
// phi rebuilds that head's graph. Since phi depends only on the rows, a graph rebuilt from a
// saved memory is the graph that grew incrementally (rows go in in order, levels come from a
// seeded generator).
#include "model/memory_index.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <hnswlib/hnswlib.h>
#pragma GCC diagnostic pop

#include "kernels/ops.h"
#include "runtime/error.h"

namespace lcx {

namespace {

using Graph = hnswlib::HierarchicalNSW<float>;

// Maximum inner-product search: hnswlib keeps the smallest distances, so distance = -q.k.
// (hnswlib's own InnerProductSpace uses 1 - q.k and picks its SIMD at compile time.)
class IpSpace : public hnswlib::SpaceInterface<float> {
 public:
  explicit IpSpace(size_t dim) : dim_(dim) {}
  size_t get_data_size() override { return dim_ * sizeof(float); }
  hnswlib::DISTFUNC<float> get_dist_func() override { return &dist; }
  void* get_dist_func_param() override { return &dim_; }

 private:
  static float dist(const void* a, const void* b, const void* param) {
    const auto n = int64_t(*static_cast<const size_t*>(param));
    return -kernels::dot_f32(static_cast<const float*>(a), static_cast<const float*>(b), n);
  }
  size_t dim_;
};

// A deep copy of one graph. hnswlib 0.6.2 serialises only to a file path, so the copy walks its
// (public) storage: the level-0 block (links, vector, label per element), the upper-level link
// lists, the label map, the entry point and the level generator (so later inserts of the copy
// build the same graph as the original would).
std::unique_ptr<Graph> copy_graph(const Graph& s, IpSpace* space) {
  auto d = std::make_unique<Graph>(space, s.max_elements_, s.M_, s.ef_construction_);
  std::memcpy(d->data_level0_memory_, s.data_level0_memory_, s.cur_element_count * s.size_data_per_element_);
  for (size_t i = 0; i < s.cur_element_count; ++i) {
    d->linkLists_[i] = nullptr;
    if (s.element_levels_[i] <= 0) continue;
    const size_t n = s.size_links_per_element_ * size_t(s.element_levels_[i]);
    d->linkLists_[i] = static_cast<char*>(std::malloc(n));
    if (!d->linkLists_[i]) throw std::bad_alloc();
    std::memcpy(d->linkLists_[i], s.linkLists_[i], n);
    d->element_levels_[i] = s.element_levels_[i];
  }
  d->cur_element_count = s.cur_element_count;
  d->num_deleted_ = s.num_deleted_;
  d->maxlevel_ = s.maxlevel_;
  d->enterpoint_node_ = s.enterpoint_node_;
  d->label_lookup_ = s.label_lookup_;
  d->ef_ = s.ef_;
  d->level_generator_ = s.level_generator_;
  d->update_probability_generator_ = s.update_probability_generator_;
  return d;
}

}  // namespace

// The lifting radius for keys of norm up to max_norm (see the top of the file).
float lift_radius(float max_norm) {
  const float m = std::max(max_norm * 1.05f, 1e-20f);
  return std::exp2(std::ceil(4.0f * std::log2(m)) / 4.0f);
}

struct MemoryIndex::Impl {
  int64_t n_head_kv = 0, head_dim = 0;
  HnswParams params;
  std::unique_ptr<IpSpace> space;              // head_dim + 1 (lifted keys)
  std::vector<std::unique_ptr<Graph>> graphs;  // [n_head_kv], all with the same rows
  std::vector<float> phi;                      // [n_head_kv] lifting radius of each graph
  int64_t base = 0;       // label of memory row 0 (rows dropped from the front so far)
  int64_t n_rows = 0;     // live rows: labels [base, base + n_rows)
  int64_t n_deleted = 0;  // rows marked deleted, still in the graphs

  std::unique_ptr<Graph> new_graph(size_t capacity) const {
    return std::make_unique<Graph>(space.get(), capacity, size_t(std::max(2, params.m)),
                                   size_t(std::max(1, params.ef_construction)));
  }
  void reset(int64_t hkv, int64_t hd, const HnswParams& p) {
    n_head_kv = hkv;
    head_dim = hd;
    params = p;
    space = std::make_unique<IpSpace>(size_t(hd + 1));
    graphs.clear();
    graphs.resize(size_t(hkv));  // built by sync
    phi.assign(size_t(hkv), 0.0f);
    base = n_rows = n_deleted = 0;
  }
};

MemoryIndex::MemoryIndex() : impl_(std::make_unique<Impl>()) {}
MemoryIndex::~MemoryIndex() = default;
MemoryIndex::MemoryIndex(MemoryIndex&&) noexcept = default;
MemoryIndex& MemoryIndex::operator=(MemoryIndex&&) noexcept = default;

MemoryIndex::MemoryIndex(const MemoryIndex& o) : impl_(std::make_unique<Impl>()) { *this = o; }

MemoryIndex& MemoryIndex::operator=(const MemoryIndex& o) {
  if (this == &o) return *this;
  auto d = std::make_unique<Impl>();
  const Impl& s = *o.impl_;
  d->n_head_kv = s.n_head_kv;
  d->head_dim = s.head_dim;
  d->params = s.params;
  d->phi = s.phi;
  d->base = s.base;
  d->n_rows = s.n_rows;
  d->n_deleted = s.n_deleted;
  if (!s.graphs.empty()) {
    d->space = std::make_unique<IpSpace>(size_t(s.head_dim + 1));
    for (const auto& g : s.graphs) d->graphs.push_back(g ? copy_graph(*g, d->space.get()) : nullptr);
  }
  impl_ = std::move(d);
  return *this;
}

void MemoryIndex::clear() { impl_ = std::make_unique<Impl>(); }

int64_t MemoryIndex::size() const { return impl_ ? impl_->n_rows : 0; }

size_t MemoryIndex::bytes() const {
  size_t b = 0;
  if (!impl_) return b;
  for (const auto& g : impl_->graphs) {
    if (!g) continue;
    // level 0 block + upper-level pointers + label map entries (~ a hash node each)
    b += g->max_elements_ * (g->size_data_per_element_ + sizeof(void*) + sizeof(int)) +
         g->cur_element_count * (g->size_links_per_element_ / std::max<size_t>(1, g->M_ - 1) + 48);
  }
  return b;
}

void MemoryIndex::drop_front(int64_t n) {
  Impl& I = *impl_;
  if (n <= 0 || I.graphs.empty()) return;
  const int64_t gone = std::min(n, I.n_rows);
  for (auto& g : I.graphs)
    for (int64_t t = 0; t < gone && g; ++t) g->markDelete(hnswlib::labeltype(I.base + t));
  I.n_deleted += gone;
  I.n_rows -= gone;
  // Rows never indexed (the index lagged behind the memory) simply never will be: labels stay
  // row numbers relative to the new front.
  I.base += n;
}

void MemoryIndex::sync(const kernels::KvSpan& mem, int64_t n_head_kv, int64_t head_dim, const HnswParams& p,
                       ThreadPool& pool) {
  Impl& I = *impl_;
  const bool shape_changed = I.graphs.empty() || I.n_head_kv != n_head_kv || I.head_dim != head_dim;
  // hnswlib only marks deletions: once the dead rows outnumber the live ones, rebuild.
  const bool too_many_dead = I.n_deleted > std::max<int64_t>(I.n_rows, 1024);
  if (shape_changed || too_many_dead || mem.n < I.n_rows) I.reset(n_head_kv, head_dim, p);
  const int64_t t0 = I.n_rows, t1 = mem.n;
  if (t1 <= t0) return;
  const int64_t hd = head_dim;
  // One thread per graph: each graph's rows go in in row order.
  std::atomic<int64_t> next{0};
  pool.run([&](int, int) {
    std::vector<float> row(static_cast<size_t>(hd + 1));
    auto decode = [&](int64_t t, int64_t g) {  // row t of head g into row[0, hd), returns |k|
      kernels::kv_decode(mem.fmt, mem.k + size_t(t) * mem.token_stride + size_t(g) * mem.head_stride, hd, row.data());
      return std::sqrt(kernels::dot_f32(row.data(), row.data(), hd));
    };
    for (int64_t g = next.fetch_add(1); g < n_head_kv; g = next.fetch_add(1)) {
      auto& graph = I.graphs[size_t(g)];
      float max_new = 0.0f;
      for (int64_t t = t0; t < t1; ++t) max_new = std::max(max_new, decode(t, g));
      int64_t from = t0;
      if (!graph || max_new > I.phi[size_t(g)]) {
        // A key longer than the lifting radius (or no graph yet): rebuild this head's graph
        // with a radius for every row it holds.
        float max_all = max_new;
        for (int64_t t = 0; t < t0; ++t) max_all = std::max(max_all, decode(t, g));
        I.phi[size_t(g)] = lift_radius(max_all);
        graph = I.new_graph(size_t(std::max<int64_t>(1024, t1)));
        from = 0;
      }
      const size_t need = graph->cur_element_count + size_t(t1 - from);
      if (need > graph->max_elements_) graph->resizeIndex(std::max(need, graph->max_elements_ * 3 / 2));
      const float phi2 = I.phi[size_t(g)] * I.phi[size_t(g)];
      for (int64_t t = from; t < t1; ++t) {
        const float n = decode(t, g);
        row[size_t(hd)] = std::sqrt(std::max(0.0f, phi2 - n * n));
        graph->addPoint(row.data(), hnswlib::labeltype(I.base + t));
      }
    }
  });
  I.n_rows = t1;
}

void MemoryIndex::search(const float* q, int64_t n_q, int64_t n_head, int64_t k, int ef_search, int32_t* out,
                         ThreadPool& pool) const {
  const Impl& I = *impl_;
  LCX_CHECK(!I.graphs.empty() && n_head % I.n_head_kv == 0, "memory index searched before sync");
  const int64_t group = n_head / I.n_head_kv, hd = I.head_dim;
  const size_t ef = size_t(std::max<int64_t>(k, ef_search > 0 ? ef_search : std::max<int64_t>(128, 4 * k)));
  for (const auto& g : I.graphs) {
    LCX_CHECK(g != nullptr, "memory index searched before sync");
    g->setEf(ef);
  }
  // Work items: (kv head, chunk of queries); enough of them for every thread.
  const int64_t n_chunks = std::clamp<int64_t>((2 * pool.size() + I.n_head_kv - 1) / I.n_head_kv, 1, n_q);
  const int64_t per = (n_q + n_chunks - 1) / n_chunks;
  const int64_t n_items = I.n_head_kv * n_chunks;
  std::atomic<int64_t> next{0};
  pool.run([&](int, int) {
    std::vector<float> qrow(static_cast<size_t>(hd + 1), 0.0f);
    for (int64_t it = next.fetch_add(1); it < n_items; it = next.fetch_add(1)) {
      const int64_t g = it % I.n_head_kv, c = it / I.n_head_kv;
      const Graph& graph = *I.graphs[size_t(g)];
      for (int64_t i = c * per; i < std::min(n_q, (c + 1) * per); ++i) {
        for (int64_t hh = 0; hh < group; ++hh) {
          const int64_t h = g * group + hh;
          int32_t* dst = out + (i * n_head + h) * k;
          std::copy(q + (i * n_head + h) * hd, q + (i * n_head + h + 1) * hd, qrow.begin());  // q' = [q, 0]
          auto res = graph.searchKnn(qrow.data(), size_t(k));  // furthest on top
          int64_t j = int64_t(res.size());
          std::fill(dst + j, dst + k, -1);
          while (!res.empty()) {
            dst[--j] = int32_t(int64_t(res.top().second) - I.base);
            res.pop();
          }
        }
      }
    }
  });
}

}  // namespace lcx
