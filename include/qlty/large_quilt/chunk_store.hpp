#pragma once
// IWYU pragma: private, include <qlty/large_quilt.hpp>
// The accumulator chunks of a disk-cached quilt: Zarr arrays on disk seen through a bounded cache. A chunk is
// loaded (or zero) on first use and kept until the cache is full; then the least recently used ones leave it, a
// changed one as a staged file next to its target (spilled), which the next checkpoint renames into place and
// which is read back from there until then. So the arrays always hold exactly the last checkpoint.
//
// Chunk buffers are cut from slabs of about 8 MiB advised for transparent huge pages, which come from and go back
// to qlty's cache of output blocks (support/output_buffers.hpp): a fresh buffer costs one page fault per 2 MiB, not
// per 4 KiB (page faults took half the time of stitching a small quilt), and a quilt after another in the same
// process starts on pages it already has. A buffer that leaves the cache goes to the store's free list, never to
// the C heap: long-lived buffers freed in LRU order fragment it (measured: 846 MiB of peak memory for a 256 MiB
// cache), and the slabs hold at most what the cache held at its fullest.

#include <qlty/large_quilt/checkpoint_journal.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/output_buffers.hpp>
#include <qlty/zarr.hpp>

#include <torch/torch.h>

#include <unistd.h>

#include <array>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qlty::detail {

/// Chunks of up to `Arrays` arrays of shape (N, C, *S), chunked (1, C, *chunk), under one folder.
template <int D, int Arrays>
class ChunkStore {
 public:
  using Index = std::array<int64_t, D>;

  ChunkStore(std::string folder, const Index& chunk, const Index& grid, int64_t cache_bytes)
      : folder_(std::move(folder)), chunk_(chunk), grid_(grid), cache_bytes_(cache_bytes) {}

  /// Uses `array` (with C channels) as accumulator `id`.
  void attach(int id, zarr::Array array) {
    C_ = array.shape()[1];
    arrays_[id] = std::move(array);
  }
  bool has(int id) const { return arrays_[id].has_value(); }
  int64_t channels() const { return C_; }

  /// Chunk `cidx` of image n of accumulator `id` for adding to, as (C, *chunk) float32: loaded, or zero on first
  /// use; marked changed. Valid until the next evict().
  float* write(int id, int64_t n, const Index& cidx) {
    const uint64_t k = key(id, n, cidx);
    auto it = cache_.find(k);
    if (it == cache_.end()) {
      Entry e;
      e.id = id;
      e.index = full_index(n, cidx);
      const auto sp = spilled_.find(k);
      const auto& arr = *arrays_[id];
      e.data = buffer();
      if (sp != spilled_.end()) {
        e.data.copy_(arr.read_chunk_file(path(sp->second.second)));
        ++reloads_;
      } else if (arr.chunk_exists(e.index)) {
        e.data.copy_(arr.read_chunk(e.index));
        ++reloads_;
      } else {
        e.data.zero_();  // never stored: the fill value, 0
      }
      cached_bytes_ += e.data.numel() * 4;
      lru_.push_front(k);
      e.lru = lru_.begin();
      it = cache_.emplace(k, std::move(e)).first;
    } else {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    }
    if (!it->second.dirty) {
      it->second.dirty = true;
      ++dirty_count_;
    }
    return it->second.data.template data_ptr<float>();
  }

  /// Chunk `cidx` of image n of accumulator `id` for reading, (C, *chunk): the cached one, or read from disk
  /// without caching it.
  torch::Tensor read(int id, int64_t n, const Index& cidx) const {
    const auto it = cache_.find(key(id, n, cidx));
    if (it != cache_.end()) return it->second.data[0];
    const auto sp = spilled_.find(key(id, n, cidx));
    if (sp != spilled_.end()) return arrays_[id]->read_chunk_file(path(sp->second.second))[0];
    return arrays_[id]->read_chunk(full_index(n, cidx))[0];
  }

  /// When the cache holds more than its limit, the least recently used chunks leave it down to 3/4 of it; the
  /// changed ones are staged (spilled) in parallel, as a checkpoint stages them.
  void evict() {
    if (cached_bytes_ <= cache_bytes_) return;
    std::vector<uint64_t> leaving;
    for (int64_t left = cached_bytes_; left > cache_bytes_ * 3 / 4 && !lru_.empty();) {
      leaving.push_back(lru_.back());
      lru_.pop_back();
      left -= cache_.at(leaving.back()).data.numel() * 4;
    }
    std::vector<Entry*> spilling;
    for (auto k : leaving)
      if (cache_.at(k).dirty) spilling.push_back(&cache_.at(k));
    std::vector<std::string> staged(spilling.size());
    const uint64_t seq0 = seq_;
    seq_ += spilling.size();
    try {
      at::parallel_for(0, static_cast<int64_t>(spilling.size()), 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) staged[i] = stage(*spilling[i], seq0 + static_cast<uint64_t>(i));
      });
    } catch (...) {  // nothing leaves: the chunks go back to the cache's LRU end, what was staged now is removed
      for (const auto& f : staged)
        if (!f.empty()) ::unlink(path(f).c_str());
      for (auto k = leaving.rbegin(); k != leaving.rend(); ++k) {
        lru_.push_back(*k);
        cache_.at(*k).lru = std::prev(lru_.end());
      }
      throw;
    }
    size_t next_staged = 0;
    for (auto k : leaving) {
      auto it = cache_.find(k);
      if (it->second.dirty) {
        const auto old = spilled_.find(k);
        if (old != spilled_.end()) ::unlink(path(old->second.second).c_str());
        spilled_[k] = {target(it->second), staged[next_staged++]};
        --dirty_count_;
        ++spills_;
      }
      cached_bytes_ -= it->second.data.numel() * 4;
      release(std::move(it->second.data));
      cache_.erase(it);
    }
  }

  /// Whether anything changed since the last checkpoint.
  bool changed() const { return dirty_count_ > 0 || !spilled_.empty(); }

  /// Stages every changed chunk for a checkpoint: the cached ones now (in parallel: encoding and writing chunks
  /// are independent), appended to `renames` first, then the spilled ones (staged already). Returns how many were
  /// staged now. On a failure, what was staged now is removed (spilled chunks stay staged).
  size_t stage_changes(Renames& renames) {
    dirty_.clear();
    for (auto& [key, e] : cache_)
      if (e.dirty) dirty_.push_back(&e);
    const size_t base = renames.size();
    renames.resize(base + dirty_.size());
    const uint64_t seq0 = seq_;
    seq_ += dirty_.size();
    try {
      at::parallel_for(0, static_cast<int64_t>(dirty_.size()), 1, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k)
          renames[base + k] = {target(*dirty_[k]), stage(*dirty_[k], seq0 + static_cast<uint64_t>(k))};
      });
    } catch (...) {
      for (size_t k = base; k < renames.size(); ++k)
        if (!renames[k].second.empty()) ::unlink(path(renames[k].second).c_str());
      renames.resize(base);
      throw;
    }
    for (auto& [key, sp] : spilled_) {
      const auto c = cache_.find(key);
      if (c != cache_.end() && c->second.dirty) {  // superseded by the version staged just now
        ::unlink(path(sp.second).c_str());
        continue;
      }
      renames.push_back(sp);
    }
    return dirty_.size();
  }

  /// After a committed checkpoint: nothing is spilled or changed.
  void committed() {
    spilled_.clear();
    for (auto* e : dirty_) e->dirty = false;
    dirty_.clear();
    dirty_count_ = 0;
  }

  /// A number for the next staged file's name.
  uint64_t next_seq() { return seq_++; }

  int64_t spills() const { return spills_; }
  int64_t reloads() const { return reloads_; }
  int64_t cached_bytes() const { return cached_bytes_; }

 private:
  struct Entry {
    int id = 0;
    std::vector<int64_t> index;  // full chunk index in its array
    torch::Tensor data;          // (1, C, *chunk)
    bool dirty = false;
    std::list<uint64_t>::iterator lru;
  };

  std::string path(const std::string& rel) const { return join_path(folder_, rel); }

  std::vector<int64_t> full_index(int64_t n, const Index& cidx) const {
    std::vector<int64_t> i{n, 0};
    i.insert(i.end(), cidx.begin(), cidx.end());
    return i;
  }

  uint64_t key(int id, int64_t n, const Index& cidx) const {
    uint64_t k = static_cast<uint64_t>(n);
    for (int a = 0; a < D; ++a) k = k * static_cast<uint64_t>(grid_[a]) + static_cast<uint64_t>(cidx[a]);
    return k * Arrays + static_cast<uint64_t>(id);
  }

  /// The chunk file of an entry, relative to the folder.
  std::string target(const Entry& e) const {
    return base_name(arrays_[e.id]->path()) + "/" + arrays_[e.id]->metadata().chunk_key(e.index.data());
  }

  /// Writes an entry's chunk to a new staged file next to its target; returns the staged path (relative).
  std::string stage(const Entry& e, uint64_t seq) const {
    const std::string staged = CheckpointJournal::staged_name(target(e), seq);
    arrays_[e.id]->write_chunk_file(path(staged), e.data);
    return staged;
  }

  int64_t chunk_numel() const { return C_ * c10::multiply_integers(chunk_); }

  /// A buffer for one chunk (1, C, *chunk), from the free list or a new slab (see the file comment).
  torch::Tensor buffer() {
    if (free_.empty()) add_slab();
    auto t = std::move(free_.back());
    free_.pop_back();
    return t;
  }
  void release(torch::Tensor t) { free_.push_back(std::move(t)); }

  void add_slab() {
    const int64_t numel = chunk_numel(), bytes = numel * 4;
    // about kSlabBytes, at most a quarter of the cache (small caches stay small), at least one chunk
    const int64_t count = std::max<int64_t>(1, std::min(kSlabBytes, cache_bytes_ / 4) / bytes);
    const auto slab = empty_output({count * numel}, torch::kFloat32);
    std::vector<int64_t> shape{1, C_};
    shape.insert(shape.end(), chunk_.begin(), chunk_.end());
    for (int64_t k = 0; k < count; ++k) free_.push_back(slab.narrow(0, k * numel, numel).view(shape));
  }
  static constexpr int64_t kSlabBytes = int64_t(8) << 20;

  std::string folder_;
  Index chunk_, grid_;
  int64_t cache_bytes_;
  int64_t C_ = 0;
  std::array<std::optional<zarr::Array>, Arrays> arrays_;
  std::unordered_map<uint64_t, Entry> cache_;
  std::list<uint64_t> lru_;
  std::unordered_map<uint64_t, std::pair<std::string, std::string>> spilled_;  // key -> (target, staged)
  std::vector<Entry*> dirty_;                                                  // staged by stage_changes
  std::vector<torch::Tensor> free_;                                            // free chunk buffers (slab views)
  int64_t cached_bytes_ = 0, dirty_count_ = 0, spills_ = 0, reloads_ = 0;
  uint64_t seq_ = 0;  // names of staged files
};

}  // namespace qlty::detail
