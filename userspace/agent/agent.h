// ringmesh-agent's control loop: owns the BPF datapath, turns the node's
// desired state (a node file, or the Kubernetes API: both behind the
// EndpointSource seam) into pods-map entries and versioned snapshots, and
// publishes those snapshots, with the pods' netns descriptors, to every
// connected proxy.
//
// Bad input never takes anything down: a node file that does not parse or
// validate is reported (file, line, field) and the last good generation
// stays in force in the maps and in the proxy.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "userspace/bpf/agent_lease.h"
#include "userspace/bpf/datapath.h"
#include "userspace/common/snapshot.h"
#include "userspace/common/snapshot_protocol.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::agent {

// Where the desired state of the node comes from.
class EndpointSource {
 public:
  virtual ~EndpointSource() = default;
  // Returns a new snapshot when the source changed since the last call,
  // nullopt when unchanged, an error when the new state is bad (the caller
  // keeps the previous one).
  virtual absl::StatusOr<std::optional<Snapshot>> Poll() = 0;
  virtual std::string Describe() const = 0;
  // One line on the source's connectivity, for the status file ("ok",
  // "synced", "connecting to https://...: <error>, retry in 3.2s").
  virtual std::string Health() const { return "ok"; }
};

// Reads the local node file; reloads when its content changes.
class NodeFileSource : public EndpointSource {
 public:
  explicit NodeFileSource(std::string path) : path_(std::move(path)) {}
  absl::StatusOr<std::optional<Snapshot>> Poll() override;
  std::string Describe() const override { return "node file " + path_; }

 private:
  std::string path_;
  std::string last_content_;
  bool have_last_ = false;
};

struct AgentOptions {
  bpf::DatapathOptions datapath;
  std::string agent_socket;     // proxies connect here
  std::string status_file;      // JSON status for ringmeshctl, written atomically
  int poll_interval_ms = 250;   // source polling period
  int lease_timeout_ms = 5000;  // a silent datapath owner is replaced after this
};

class Agent {
 public:
  Agent(AgentOptions opts, std::unique_ptr<EndpointSource> source);
  ~Agent();

  // Loads or adopts the datapath and opens the agent socket.
  [[nodiscard]] absl::Status Start();
  // Runs until Stop() (signal-safe flag); returns the first fatal error.
  [[nodiscard]] absl::Status Run();
  void Stop() { stop_.store(true); }

 private:
  struct PodState {
    uint32_t pod_id = 0;
    uint64_t netns_cookie = 0;
    UniqueFd netns_fd;
  };
  struct ProxyConn {
    UniqueFd fd;
    uint64_t acked = 0;
    uint16_t version = proto::kMaxProtocolVersion;  // negotiated in the handshake
  };

  absl::Status Apply(Snapshot snap);
  void PollLease();
  void SyncDatapath();
  void Publish(ProxyConn& conn);
  void WriteStatus();
  uint32_t AllocatePodId();

  AgentOptions opts_;
  std::unique_ptr<EndpointSource> source_;
  std::unique_ptr<bpf::Datapath> datapath_;
  std::optional<bpf::AgentLease> lease_;
  bool owner_ = false;  // holds the datapath lease (see agent_lease.h)
  std::vector<bpf::PodEntry> entries_;  // datapath view of current_
  std::atomic<bool> stop_{false};

  std::optional<Snapshot> current_;  // last good, pod_ids assigned
  std::map<std::string, PodState> pods_;  // key: netns identity (dev:ino)
  std::map<uint64_t, uint32_t> adopted_ids_;  // netns cookie -> pod_id from pinned map
  uint32_t next_pod_id_ = 1;
  uint64_t generation_ = 0;
  std::string last_error_;
  std::string reported_health_;  // source Health() last written to the status file
  std::vector<int> current_fds_;  // netns fd per current_->pods index, -1 if none
  std::vector<ProxyConn> proxies_;
  std::unique_ptr<proto::AgentServer> server_;
  int64_t started_unix_ms_ = 0;
};

}  // namespace ringmesh::agent
