// Snapshot intake: a thread that connects to the agent's Unix socket
// (userspace/common/snapshot_protocol.h), applies every snapshot it pushes
// to the ProxyCore and acknowledges it. When the agent is down it
// reconnects with exponential backoff; meanwhile the proxy keeps serving
// with the last snapshot it applied.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "absl/time/time.h"

namespace ringmesh::proxy {

class ProxyCore;

class AgentClient {
 public:
  struct Options {
    std::string socket_path;
    absl::Duration initial_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(5);
  };

  AgentClient(Options options, ProxyCore* core);
  ~AgentClient();
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  void Start();
  // Interrupts a blocking receive and joins the thread.
  void Stop();

  bool connected() const { return connected_.load(); }
  uint64_t snapshots_applied() const { return applied_.load(); }

 private:
  void Run();
  // Waits `d` unless stopped first; returns false when stopped.
  bool SleepFor(absl::Duration d);

  Options options_;
  ProxyCore* core_;
  std::thread thread_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> applied_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  int conn_fd_ = -1;   // guarded by mu_: shut down by Stop()
};

}  // namespace ringmesh::proxy
