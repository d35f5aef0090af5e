// Which HBONE connection a new tunnel should use: pure bookkeeping, no
// sockets and no connections (the caller owns those and maps ids to them).
// Connections are shared per (source identity, destination identity,
// destination IP), as ztunnel's pool does, up to a stream limit each; a
// connection that got or sent GOAWAY takes no new streams; one idle (no
// streams) for `idle_timeout` is handed back for closing.
//
//   auto got = pool.Acquire(key);              // reserves a stream slot
//   if (got->is_new) conns[got->id] = HboneClientConn::Create(...);   // Remove(id) if that fails
//   ... stream ends: pool.Release(got->id);     GOAWAY: pool.MarkDraining(id);
//   on a timer: for (id : pool.CollectIdle()) conns.erase(id) (after a graceful Goaway)
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "userspace/common/ip.h"
#include "userspace/proxy/tls/spiffe_id.h"

namespace ringmesh::proxy::hbone {

struct HbonePoolKey {
  tls::SpiffeId source;
  tls::SpiffeId destination;
  IpAddress destination_ip;

  friend bool operator==(const HbonePoolKey&, const HbonePoolKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const HbonePoolKey& k) {
    return H::combine(std::move(h), k.source, k.destination, k.destination_ip.bytes());
  }
};

struct HbonePoolOptions {
  size_t max_streams_per_connection = 100;
  absl::Duration idle_timeout = absl::Minutes(5);
  size_t max_connections = 4096;  // all keys together
  std::function<absl::Time()> clock = [] { return absl::Now(); };
};

class HbonePool {
 public:
  using ConnId = uint64_t;
  using Options = HbonePoolOptions;
  struct Acquired {
    ConnId id = 0;
    bool is_new = false;  // open a connection for this id (it already carries the reserved stream)
  };

  explicit HbonePool(Options options = {}) : options_(std::move(options)) {}

  // Reserves one stream on a usable connection for `key` (the busiest one
  // that has room, so idle ones can expire), or registers a new connection
  // with the slot reserved. ResourceExhausted at max_connections.
  absl::StatusOr<Acquired> Acquire(const HbonePoolKey& key);
  // A stream reserved by Acquire ended (or never opened).
  void Release(ConnId id);
  // GOAWAY sent or received: existing streams finish, no new ones.
  void MarkDraining(ConnId id);
  // The connection is gone (failed, closed): forget it.
  void Remove(ConnId id);
  // Connections without streams for at least idle_timeout, and draining
  // ones without streams; they are forgotten and returned for closing.
  std::vector<ConnId> CollectIdle();

  size_t size() const { return conns_.size(); }
  size_t streams(ConnId id) const;
  bool draining(ConnId id) const;

 private:
  struct Entry {
    HbonePoolKey key;
    size_t streams = 0;
    bool draining = false;
    absl::Time idle_since;
  };

  Options options_;
  ConnId next_id_ = 1;
  absl::flat_hash_map<ConnId, Entry> conns_;
  absl::flat_hash_map<HbonePoolKey, std::vector<ConnId>> by_key_;
};

}  // namespace ringmesh::proxy::hbone
