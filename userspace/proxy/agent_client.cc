#include "userspace/proxy/agent_client.h"

#include <sys/socket.h>

#include <algorithm>

#include "spdlog/spdlog.h"
#include "userspace/common/snapshot_protocol.h"
#include "userspace/proxy/proxy_core.h"

namespace ringmesh::proxy {

AgentClient::AgentClient(Options options, ProxyCore* core) : options_(std::move(options)), core_(core) {}

AgentClient::~AgentClient() { Stop(); }

void AgentClient::Start() { thread_ = std::thread([this] { Run(); }); }

void AgentClient::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    // ReceiveSnapshot blocks in recvmsg; shutting the socket down (not
    // closing it: the fd number could be reused) makes it return.
    if (conn_fd_ >= 0) ::shutdown(conn_fd_, SHUT_RDWR);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool AgentClient::SleepFor(absl::Duration d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoMilliseconds(d), [this] { return stop_; });
  return !stop_;
}

void AgentClient::Run() {
  absl::Duration backoff = options_.initial_backoff;
  bool warned = false;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    auto conn = proto::ConnectToAgentPeer(options_.socket_path);
    if (!conn.ok()) {
      // Say it once at warning level; a down agent is expected during its
      // restarts and the proxy keeps working with its last snapshot.
      if (!warned) {
        spdlog::warn("agent at {} unavailable: {}; retrying", options_.socket_path, conn.status().ToString());
        warned = true;
      } else {
        spdlog::debug("agent connect: {}", conn.status().ToString());
      }
      if (!SleepFor(backoff)) return;
      backoff = std::min(backoff * 2, options_.max_backoff);
      continue;
    }
    spdlog::info("connected to agent at {} (protocol version {})", options_.socket_path, conn->version);
    warned = false;
    backoff = options_.initial_backoff;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      conn_fd_ = conn->fd.get();
    }
    connected_ = true;
    for (;;) {
      auto snap = proto::ReceiveSnapshot(conn->fd.get());
      if (!snap.ok()) {
        if (auto gen = proto::RejectedGeneration(snap.status())) {
          spdlog::error("snapshot {} rejected: {}", *gen, snap.status().ToString());
          const std::string error(snap.status().message());
          if (proto::SendAck(conn->fd.get(), *gen, error, conn->version).ok()) continue;
        }
        spdlog::warn("agent connection lost: {}", snap.status().ToString());
        break;
      }
      const uint64_t gen = snap->snapshot.generation;
      absl::Status applied = core_->ApplySnapshot(snap->snapshot, std::move(snap->netns_fds));
      applied_.fetch_add(1);
      if (applied.ok()) {
        spdlog::info("applied snapshot generation {}", gen);
      } else {
        spdlog::error("snapshot generation {} applied with errors: {}", gen, applied.ToString());
      }
      if (absl::Status s = proto::SendAck(conn->fd.get(), gen,
                                          applied.ok() ? std::string() : std::string(applied.message()),
                                          conn->version);
          !s.ok()) {
        spdlog::warn("ack to agent: {}", s.ToString());
        break;
      }
    }
    connected_ = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      conn_fd_ = -1;
    }
    conn->fd.Reset();
    if (!SleepFor(backoff)) return;
  }
}

}  // namespace ringmesh::proxy
