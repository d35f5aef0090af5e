#include "userspace/proxy/handover.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "userspace/common/snapshot_protocol.h"

namespace ringmesh::proxy {
namespace {

constexpr size_t kMaxHeader = 4096;

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(sun.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("handover socket path empty or too long: ", path));
  }
  std::memcpy(sun.sun_path, path.data(), path.size());
  return sun;
}

}  // namespace

absl::StatusOr<HandoverHeader> ParseHandoverHeader(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError("handover header is not a JSON object");
  HandoverHeader h;
  if (auto e = j.find("end"); e != j.end()) {
    if (!e->is_boolean() || !e->get<bool>()) return absl::DataLossError("handover header: \"end\" must be true");
    h.end = true;
    return h;
  }
  auto c = j.find("netns_cookie");
  auto a = j.find("address");
  if (c == j.end() || !c->is_number_unsigned() || a == j.end() || !a->is_string()) {
    return absl::DataLossError("handover header without an unsigned netns_cookie and an address");
  }
  h.netns_cookie = c->get<uint64_t>();
  h.address = a->get<std::string>();
  if (h.address.empty() || h.address.size() > 64) return absl::DataLossError("handover header: bad address");
  return h;
}

absl::StatusOr<InheritedListeners> TakeOverListeners(const std::string& path, int timeout_ms) {
  auto sun = UnixAddress(path);
  if (!sun.ok()) return sun.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return absl::ErrnoToStatus(errno, "socket(AF_UNIX)");
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&*sun), sizeof(*sun)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("connect ", path));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  InheritedListeners out;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return absl::DeadlineExceededError(absl::StrCat("handover from ", path, ": timed out"));
    pollfd p{fd.get(), POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[kMaxHeader];
    iovec iov{buf, sizeof(buf)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * proto::kMaxFdsPerMessage)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = recvmsg(fd.get(), &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "handover recvmsg");
    if (n == 0) return absl::UnavailableError(absl::StrCat("handover from ", path, ": closed before the end"));
    std::vector<UniqueFd> fds;  // owned at once, so nothing leaks on an error below
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int f;
        std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(f);
      }
    }
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
      return absl::DataLossError("handover message truncated");
    }
    auto header = ParseHandoverHeader(std::string_view(buf, static_cast<size_t>(n)));
    if (!header.ok()) return header.status();
    if (header->end) return out;
    if (fds.empty()) return absl::DataLossError("handover: a listener set without sockets");
    if (out.size() >= kMaxHandoverSets) return absl::ResourceExhaustedError("handover: too many listener sets");
    auto& v = out[{header->netns_cookie, header->address}];
    for (auto& f : fds) v.push_back(std::move(f));
  }
}

absl::StatusOr<std::unique_ptr<HandoverServer>> HandoverServer::Start(const std::string& path, SetsFn sets) {
  auto sun = UnixAddress(path);
  if (!sun.ok()) return sun.status();
  struct stat st{};
  if (lstat(path.c_str(), &st) == 0) {
    // A predecessor's socket (we have taken over from it, or it is gone):
    // the path is ours now. Anything else there is not ours to remove.
    if (!S_ISSOCK(st.st_mode)) return absl::AlreadyExistsError(absl::StrCat(path, " exists and is not a socket"));
    ::unlink(path.c_str());
  }
  std::unique_ptr<HandoverServer> s(new HandoverServer());
  s->path_ = path;
  s->sets_ = std::move(sets);
  s->listen_fd_.Reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s->listen_fd_) return absl::ErrnoToStatus(errno, "socket(AF_UNIX)");
  if (bind(s->listen_fd_.get(), reinterpret_cast<const sockaddr*>(&*sun), sizeof(*sun)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("bind ", path));
  }
  ::chmod(path.c_str(), 0600);
  if (listen(s->listen_fd_.get(), 4) != 0) return absl::ErrnoToStatus(errno, "listen");
  s->stop_fd_.Reset(eventfd(0, EFD_CLOEXEC));
  if (!s->stop_fd_) return absl::ErrnoToStatus(errno, "eventfd");
  s->thread_ = std::thread([p = s.get()] { p->Run(); });
  return s;
}

HandoverServer::~HandoverServer() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_fd_.get(), &one, sizeof(one));
    thread_.join();
  }
  // The path stays: a successor that took over from us rebinds it, and a
  // stale socket file is replaced by the next Start.
}

void HandoverServer::Run() {
  for (;;) {
    pollfd p[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("handover: poll: {}", std::strerror(errno));
      return;
    }
    if (p[1].revents != 0) return;
    if ((p[0].revents & POLLIN) == 0) continue;
    UniqueFd c(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) continue;
    std::vector<ListenerSet> sets = sets_();
    size_t sent = 0;
    absl::Status st;
    for (const ListenerSet& s : sets) {
      std::vector<int> fds;
      for (const UniqueFd& f : s.fds) fds.push_back(f.get());
      if (fds.size() > proto::kMaxFdsPerMessage) {
        st = absl::ResourceExhaustedError("too many sockets in one listener set");
        break;
      }
      nlohmann::json h = {{"netns_cookie", s.netns_cookie}, {"address", s.address}};
      // At most 5 s per message: a successor that stops reading cannot hold us.
      st = proto::SendRawMessage(c.get(), h.dump(), fds, 5000);
      if (!st.ok()) break;
      sent += fds.size();
    }
    if (st.ok()) st = proto::SendRawMessage(c.get(), nlohmann::json{{"end", true}}.dump(), {}, 5000);
    if (st.ok()) {
      spdlog::info("handover: {} listening socket(s) in {} set(s) handed to a successor", sent, sets.size());
    } else {
      spdlog::warn("handover: {}", st.ToString());
    }
  }
}

}  // namespace ringmesh::proxy
