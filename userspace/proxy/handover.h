// Restart without a dropped connection: a running proxy hands its pod
// listening sockets to its successor over a Unix socket (SCM_RIGHTS), so
// the sockets never close and nothing queued on them is lost. The old
// proxy keeps accepting until it drains; both accept from the same queues
// meanwhile. (Closing a listener and relying on tcp_migrate_req loses the
// odd connection caught mid-handshake; handing the socket over loses none.)
//
// Wire: SOCK_SEQPACKET. The successor connects; the server sends one
// message per listener set, a JSON header {"netns_cookie", "address"} with
// the set's sockets attached, then {"end": true}, and closes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::proxy {

// One SO_REUSEPORT group's sockets: a pod netns and a loopback address.
struct ListenerSet {
  uint64_t netns_cookie = 0;
  std::string address;  // "127.0.0.1:15001", "[::1]:15001"
  std::vector<UniqueFd> fds;
};

using ListenerSetKey = std::pair<uint64_t, std::string>;  // (netns cookie, address)
using InheritedListeners = std::map<ListenerSetKey, std::vector<UniqueFd>>;

// One handover message's header: a listener set, or the end.
struct HandoverHeader {
  bool end = false;
  uint64_t netns_cookie = 0;
  std::string address;
};
// Strict: a JSON object with "end": true, or with an unsigned
// "netns_cookie" and a non-empty "address" of at most 64 bytes.
absl::StatusOr<HandoverHeader> ParseHandoverHeader(std::string_view text);

// The successor's side: every listener set of the proxy serving `path`.
// Bounded by `timeout_ms` and by kMaxHandoverSets sets.
absl::StatusOr<InheritedListeners> TakeOverListeners(const std::string& path, int timeout_ms);

inline constexpr size_t kMaxHandoverSets = 65536;

// The running proxy's side: answers each successor with what `sets`
// returns at that moment (duplicates of its listening sockets).
class HandoverServer {
 public:
  using SetsFn = std::function<std::vector<ListenerSet>()>;
  static absl::StatusOr<std::unique_ptr<HandoverServer>> Start(const std::string& path, SetsFn sets);
  ~HandoverServer();
  HandoverServer(const HandoverServer&) = delete;
  HandoverServer& operator=(const HandoverServer&) = delete;

 private:
  HandoverServer() = default;
  void Run();

  std::string path_;
  SetsFn sets_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;  // eventfd
  std::thread thread_;
};

}  // namespace ringmesh::proxy
