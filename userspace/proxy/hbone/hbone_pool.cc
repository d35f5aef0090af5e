// HBONE connection pool bookkeeping.
#include "userspace/proxy/hbone/hbone_pool.h"

#include <algorithm>

namespace ringmesh::proxy::hbone {

absl::StatusOr<HbonePool::Acquired> HbonePool::Acquire(const HbonePoolKey& key) {
  auto it = by_key_.find(key);
  if (it != by_key_.end()) {
    Entry* best = nullptr;
    ConnId best_id = 0;
    for (ConnId id : it->second) {
      Entry& e = conns_.at(id);
      if (e.draining || e.streams >= options_.max_streams_per_connection) continue;
      if (best == nullptr || e.streams > best->streams) {
        best = &e;
        best_id = id;
      }
    }
    if (best != nullptr) {
      ++best->streams;
      return Acquired{best_id, false};
    }
  }
  if (conns_.size() >= options_.max_connections) {
    return absl::ResourceExhaustedError("hbone pool: connection limit reached");
  }
  ConnId id = next_id_++;
  conns_.emplace(id, Entry{key, 1, false, options_.clock()});
  by_key_[key].push_back(id);
  return Acquired{id, true};
}

void HbonePool::Release(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.streams == 0) return;
  if (--it->second.streams == 0) it->second.idle_since = options_.clock();
}

void HbonePool::MarkDraining(ConnId id) {
  auto it = conns_.find(id);
  if (it != conns_.end()) it->second.draining = true;
}

void HbonePool::Remove(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  auto k = by_key_.find(it->second.key);
  if (k != by_key_.end()) {
    std::erase(k->second, id);
    if (k->second.empty()) by_key_.erase(k);
  }
  conns_.erase(it);
}

std::vector<HbonePool::ConnId> HbonePool::CollectIdle() {
  const absl::Time now = options_.clock();
  std::vector<ConnId> out;
  for (const auto& [id, e] : conns_) {
    if (e.streams > 0) continue;
    if (e.draining || now - e.idle_since >= options_.idle_timeout) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  for (ConnId id : out) Remove(id);
  return out;
}

size_t HbonePool::streams(ConnId id) const {
  auto it = conns_.find(id);
  return it == conns_.end() ? 0 : it->second.streams;
}

bool HbonePool::draining(ConnId id) const {
  auto it = conns_.find(id);
  return it != conns_.end() && it->second.draining;
}

}  // namespace ringmesh::proxy::hbone
