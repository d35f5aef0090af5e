#include "userspace/common/snapshot_protocol.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "userspace/common/snapshot_json.h"
#include "userspace/common/status_macros.h"

#ifndef RINGMESH_RELEASE
#define RINGMESH_RELEASE "unknown"
#endif

namespace ringmesh::proto {
namespace {

constexpr absl::string_view kRejectedGenerationUrl = "type.ringmesh.dev/proto.RejectedGeneration";

// Little-endian, independent of the host, so a capture can be decoded
// anywhere and the fuzzer's corpus means the same on every machine.
class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(std::string_view b) { out_.append(b); }
  std::string Take() { return std::move(out_); }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  size_t remaining() const { return in_.size(); }
  // Callers check remaining() first; reading past the end is a bug here.
  uint8_t U8() { return static_cast<uint8_t>(Le(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Le(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Le(4)); }
  uint64_t U64() { return Le(8); }
  std::string_view Bytes(size_t n) {
    auto b = in_.substr(0, n);
    in_.remove_prefix(b.size());
    return b;
  }

 private:
  uint64_t Le(size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < in_.size(); ++i) v |= uint64_t{static_cast<uint8_t>(in_[i])} << (8 * i);
    in_.remove_prefix(std::min(n, in_.size()));
    return v;
  }
  std::string_view in_;
};

absl::Status Malformed(MessageType type, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed ", ToString(type), " message: ", why));
}

absl::Status ErrnoStatus(absl::string_view what, int err) {
  return absl::Status(absl::ErrnoToStatusCode(err), absl::StrCat(what, ": ", std::strerror(err)));
}

bool IsPrintableAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

// Remaining milliseconds of a deadline for poll(); -1 stays infinite.
class Deadline {
 public:
  explicit Deadline(int timeout_ms)
      : infinite_(timeout_ms < 0),
        end_(std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms)) {}
  int RemainingMs() const {
    if (infinite_) return -1;
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(end_ - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
  }

 private:
  bool infinite_;
  std::chrono::steady_clock::time_point end_;
};

// Waits for `events`; DeadlineExceeded when the time is up.
absl::Status WaitFor(int fd, short events, const Deadline& deadline, absl::string_view what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, deadline.RemainingMs());
    if (n > 0) return absl::OkStatus();
    if (n == 0) return absl::DeadlineExceededError(absl::StrCat("timed out waiting to ", what));
    if (errno != EINTR) return ErrnoStatus("poll", errno);
  }
}

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path \"", path, "\" must be 1..", sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

absl::Status SendMessage(int fd, uint16_t version, MessageType type, std::string_view payload,
                         std::span<const int> fds = {}) {
  return SendRawMessage(fd, EncodeMessage(type, payload, static_cast<uint32_t>(fds.size()), version), fds);
}

absl::Status CheckSendVersion(uint16_t version) {
  if (version < kMinProtocolVersion || version > kMaxProtocolVersion) {
    return absl::InvalidArgumentError(absl::StrCat("cannot send in protocol version ", version,
                                                   ", this build speaks ", kMinProtocolVersion, "..",
                                                   kMaxProtocolVersion));
  }
  return absl::OkStatus();
}

}  // namespace

const char* ToString(MessageType type) {
  switch (type) {
    case MessageType::kHello:
      return "HELLO";
    case MessageType::kSnapshotBegin:
      return "SNAPSHOT_BEGIN";
    case MessageType::kNetnsFds:
      return "NETNS_FDS";
    case MessageType::kSnapshotEnd:
      return "SNAPSHOT_END";
    case MessageType::kAck:
      return "ACK";
  }
  return "UNKNOWN";
}

const char* ToString(Role role) {
  switch (role) {
    case Role::kAgent:
      return "agent";
    case Role::kProxy:
      return "proxy";
  }
  return "unknown";
}

std::string_view Release() { return RINGMESH_RELEASE; }

Hello LocalHello(Role role) {
  return Hello{role, kMinProtocolVersion, kMaxProtocolVersion, std::string(Release())};
}

// --- encoding --------------------------------------------------------------

std::string EncodeHeader(const Header& header) {
  Writer w;
  w.Bytes(std::string_view(kMagic, sizeof(kMagic)));
  w.U16(header.version);
  w.U16(static_cast<uint16_t>(header.type));
  w.U32(header.payload_len);
  w.U32(header.fd_count);
  return w.Take();
}

std::string EncodeMessage(MessageType type, std::string_view payload, uint32_t fd_count, uint16_t version) {
  std::string out = EncodeHeader(Header{version, type, static_cast<uint32_t>(payload.size()), fd_count});
  out.append(payload);
  return out;
}

std::string EncodeHello(const Hello& hello) {
  Writer w;
  std::string_view release = std::string_view(hello.release).substr(0, kMaxReleaseBytes);
  w.U16(static_cast<uint16_t>(hello.role));
  w.U16(hello.min_version);
  w.U16(hello.max_version);
  w.U16(static_cast<uint16_t>(release.size()));
  w.Bytes(release);
  return w.Take();
}

std::string EncodeSnapshotBegin(const SnapshotBegin& begin) {
  Writer w;
  w.U64(begin.generation);
  w.U32(begin.pod_count);
  w.U32(0);
  w.U64(begin.json_size);
  return w.Take();
}

std::string EncodeNetnsFds(const NetnsFds& chunk) {
  Writer w;
  w.U32(chunk.first_pod);
  w.U32(static_cast<uint32_t>(chunk.present.size()));
  for (bool p : chunk.present) w.U8(p ? 1 : 0);
  return w.Take();
}

std::string EncodeSnapshotFragment(uint64_t offset, std::string_view data) {
  Writer w;
  w.U64(offset);
  w.Bytes(data);
  return w.Take();
}

std::string EncodeAck(const Ack& ack) {
  Writer w;
  std::string_view error = std::string_view(ack.error).substr(0, kMaxAckErrorBytes);
  w.U64(ack.generation);
  w.U32(static_cast<uint32_t>(error.size()));
  w.Bytes(error);
  return w.Take();
}

// --- parsing ---------------------------------------------------------------

absl::StatusOr<Header> ParseHeader(std::string_view bytes) {
  if (bytes.size() < kHeaderSize) {
    return absl::InvalidArgumentError(absl::StrCat("message of ", bytes.size(), " bytes is shorter than the ",
                                                   kHeaderSize, "-byte header"));
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad magic \"", absl::CHexEscape(absl::string_view(bytes.data(), 4)),
                     "\": the peer does not speak the ringmesh snapshot protocol"));
  }
  Reader r(bytes.substr(sizeof(kMagic), kHeaderSize - sizeof(kMagic)));
  Header h;
  h.version = r.U16();
  uint16_t type = r.U16();
  h.payload_len = r.U32();
  h.fd_count = r.U32();
  if (type < static_cast<uint16_t>(MessageType::kHello) || type > static_cast<uint16_t>(MessageType::kAck)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown message type ", type));
  }
  h.type = static_cast<MessageType>(type);
  if (h.payload_len > kMaxPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat(ToString(h.type), " payload of ", h.payload_len,
                                                   " bytes exceeds the limit of ", kMaxPayloadBytes));
  }
  if (h.fd_count > 0 && h.type != MessageType::kNetnsFds) {
    return absl::InvalidArgumentError(absl::StrCat(ToString(h.type), " message claims ", h.fd_count,
                                                   " file descriptors; only NETNS_FDS carries any"));
  }
  if (h.fd_count > kMaxFdsPerMessage) {
    return absl::InvalidArgumentError(
        absl::StrCat("NETNS_FDS claims ", h.fd_count, " file descriptors, more than ", kMaxFdsPerMessage));
  }
  return h;
}

absl::StatusOr<Message> ParseMessage(std::string_view bytes) {
  auto header = ParseHeader(bytes);
  if (!header.ok()) return header.status();
  std::string_view payload = bytes.substr(kHeaderSize);
  if (payload.size() != header->payload_len) {
    return absl::InvalidArgumentError(absl::StrCat(ToString(header->type), " header announces ",
                                                   header->payload_len, " payload bytes but ", payload.size(),
                                                   " arrived"));
  }
  return Message{*header, payload};
}

absl::Status CheckMessageVersion(const Header& header) {
  if (header.type == MessageType::kHello) return absl::OkStatus();
  if (header.version < kMinProtocolVersion || header.version > kMaxProtocolVersion) {
    return absl::InvalidArgumentError(absl::StrCat(ToString(header.type), " message in protocol version ",
                                                   header.version, ", this build speaks ",
                                                   kMinProtocolVersion, "..", kMaxProtocolVersion));
  }
  return absl::OkStatus();
}

absl::StatusOr<Hello> ParseHello(std::string_view payload) {
  constexpr auto kType = MessageType::kHello;
  Reader r(payload);
  if (r.remaining() < 8) return Malformed(kType, "shorter than 8 bytes");
  Hello h;
  uint16_t role = r.U16();
  h.min_version = r.U16();
  h.max_version = r.U16();
  uint16_t release_len = r.U16();
  if (role != static_cast<uint16_t>(Role::kAgent) && role != static_cast<uint16_t>(Role::kProxy)) {
    return Malformed(kType, absl::StrCat("unknown role ", role));
  }
  h.role = static_cast<Role>(role);
  if (h.min_version == 0 || h.min_version > h.max_version) {
    return Malformed(kType, absl::StrCat("bad version range ", h.min_version, "..", h.max_version));
  }
  if (release_len > kMaxReleaseBytes)
    return Malformed(kType, absl::StrCat("release of ", release_len, " bytes"));
  if (r.remaining() != release_len) {
    return Malformed(kType,
                     absl::StrCat("release length ", release_len, " but ", r.remaining(), " bytes follow"));
  }
  h.release = std::string(r.Bytes(release_len));
  if (!IsPrintableAscii(h.release)) return Malformed(kType, "release string is not printable ASCII");
  return h;
}

absl::StatusOr<SnapshotBegin> ParseSnapshotBegin(std::string_view payload) {
  constexpr auto kType = MessageType::kSnapshotBegin;
  if (payload.size() != 24) return Malformed(kType, absl::StrCat(payload.size(), " bytes instead of 24"));
  Reader r(payload);
  SnapshotBegin b;
  b.generation = r.U64();
  b.pod_count = r.U32();
  if (r.U32() != 0) return Malformed(kType, "reserved field is not zero");
  b.json_size = r.U64();
  if (b.json_size == 0) return Malformed(kType, "empty snapshot JSON");
  return b;
}

absl::StatusOr<NetnsFds> ParseNetnsFds(std::string_view payload, uint32_t fd_count) {
  constexpr auto kType = MessageType::kNetnsFds;
  Reader r(payload);
  if (r.remaining() < 8) return Malformed(kType, "shorter than 8 bytes");
  NetnsFds c;
  c.first_pod = r.U32();
  uint32_t count = r.U32();
  if (count == 0 || count > kMaxFdsPerMessage) {
    return Malformed(kType, absl::StrCat("covers ", count, " pods, must be 1..", kMaxFdsPerMessage));
  }
  if (r.remaining() != count) {
    return Malformed(kType,
                     absl::StrCat("covers ", count, " pods but has ", r.remaining(), " presence bytes"));
  }
  uint32_t present = 0;
  c.present.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    uint8_t p = r.U8();
    if (p > 1) return Malformed(kType, absl::StrCat("presence byte ", i, " is ", p));
    c.present.push_back(p == 1);
    present += p;
  }
  if (present != fd_count) {
    return Malformed(kType, absl::StrCat(present, " pods have a netns but ", fd_count, " fds are attached"));
  }
  return c;
}

absl::StatusOr<SnapshotFragment> ParseSnapshotFragment(std::string_view payload) {
  constexpr auto kType = MessageType::kSnapshotEnd;
  Reader r(payload);
  if (r.remaining() < 9) return Malformed(kType, "no JSON bytes");
  SnapshotFragment f;
  f.offset = r.U64();
  f.data = r.Bytes(r.remaining());
  if (f.data.size() > kMaxFragmentBytes) {
    return Malformed(kType,
                     absl::StrCat("fragment of ", f.data.size(), " bytes exceeds ", kMaxFragmentBytes));
  }
  return f;
}

absl::StatusOr<Ack> ParseAck(std::string_view payload) {
  constexpr auto kType = MessageType::kAck;
  Reader r(payload);
  if (r.remaining() < 12) return Malformed(kType, "shorter than 12 bytes");
  Ack a;
  a.generation = r.U64();
  uint32_t len = r.U32();
  if (len > kMaxAckErrorBytes) return Malformed(kType, absl::StrCat("error text of ", len, " bytes"));
  if (r.remaining() != len) {
    return Malformed(kType, absl::StrCat("error length ", len, " but ", r.remaining(), " bytes follow"));
  }
  a.error = std::string(r.Bytes(len));
  return a;
}

absl::StatusOr<uint16_t> NegotiateVersion(const Hello& local, const Hello& peer) {
  if (local.role == peer.role) {
    return absl::FailedPreconditionError(absl::StrCat("the peer is also a ", ToString(peer.role),
                                                      " (release ", peer.release,
                                                      "); agent and proxy must talk to each other"));
  }
  const Hello& agent = local.role == Role::kAgent ? local : peer;
  const Hello& proxy = local.role == Role::kAgent ? peer : local;
  uint16_t lo = std::max(agent.min_version, proxy.min_version);
  uint16_t hi = std::min(agent.max_version, proxy.max_version);
  if (lo <= hi) return hi;
  const char* upgrade = proxy.max_version < agent.min_version ? "proxy" : "agent";
  return absl::FailedPreconditionError(
      absl::StrCat("agent speaks protocol ", agent.min_version, "..", agent.max_version, " (release ",
                   agent.release, "), proxy speaks ", proxy.min_version, "..", proxy.max_version,
                   " (release ", proxy.release, "): upgrade the ", upgrade));
}

// --- reassembly --------------------------------------------------------------

absl::Status SnapshotAssembler::Feed(const Header& header, std::string_view payload,
                                     std::vector<UniqueFd> fds) {
  // `fds` is owned by this frame: every early return closes them.
  if (fds.size() != header.fd_count) {
    return absl::InvalidArgumentError(absl::StrCat(ToString(header.type), " announces ", header.fd_count,
                                                   " fds but ", fds.size(), " arrived"));
  }
  if (state_ == State::kComplete || state_ == State::kTaken) {
    return absl::FailedPreconditionError(absl::StrCat(ToString(header.type), " after a complete snapshot"));
  }
  // The JSON schema depends on the version: a snapshot is read in one.
  if (state_ != State::kIdle && header.version != version_) {
    return absl::InvalidArgumentError(absl::StrCat(ToString(header.type), " in protocol version ",
                                                   header.version, " inside a snapshot begun in version ",
                                                   version_));
  }
  switch (header.type) {
    case MessageType::kSnapshotBegin: {
      if (state_ != State::kIdle) return absl::InvalidArgumentError("SNAPSHOT_BEGIN inside a snapshot");
      auto begin = ParseSnapshotBegin(payload);
      if (!begin.ok()) return begin.status();
      if (begin->pod_count > options_.max_pods) {
        return absl::ResourceExhaustedError(
            absl::StrCat("snapshot has ", begin->pod_count, " pods, the limit is ", options_.max_pods));
      }
      if (begin->json_size > options_.max_snapshot_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat("snapshot JSON of ", begin->json_size,
                                                         " bytes exceeds the limit of ",
                                                         options_.max_snapshot_bytes));
      }
      begin_ = *begin;
      version_ = header.version;
      fds_.clear();
      fds_.resize(begin_.pod_count);
      // Grow with the data rather than trusting the announced size.
      json_.reserve(std::min<uint64_t>(begin_.json_size, 1 << 20));
      state_ = begin_.pod_count > 0 ? State::kFds : State::kJson;
      return absl::OkStatus();
    }
    case MessageType::kNetnsFds: {
      if (state_ != State::kFds) {
        return absl::InvalidArgumentError(state_ == State::kIdle ? "NETNS_FDS before SNAPSHOT_BEGIN"
                                                                 : "NETNS_FDS after the fds of all pods");
      }
      auto chunk = ParseNetnsFds(payload, header.fd_count);
      if (!chunk.ok()) return chunk.status();
      if (chunk->first_pod != pods_covered_) {
        return absl::InvalidArgumentError(
            absl::StrCat("NETNS_FDS starts at pod ", chunk->first_pod, ", expected ", pods_covered_));
      }
      if (chunk->present.size() > begin_.pod_count - pods_covered_) {
        return absl::InvalidArgumentError(absl::StrCat("NETNS_FDS covers pods up to ",
                                                       uint64_t{chunk->first_pod} + chunk->present.size(),
                                                       " of only ", begin_.pod_count));
      }
      size_t next_fd = 0;
      for (size_t i = 0; i < chunk->present.size(); ++i) {
        if (chunk->present[i]) fds_[pods_covered_ + i] = std::move(fds[next_fd++]);
      }
      pods_covered_ += static_cast<uint32_t>(chunk->present.size());
      if (pods_covered_ == begin_.pod_count) state_ = State::kJson;
      return absl::OkStatus();
    }
    case MessageType::kSnapshotEnd: {
      if (state_ == State::kIdle) return absl::InvalidArgumentError("SNAPSHOT_END before SNAPSHOT_BEGIN");
      if (state_ == State::kFds) {
        return absl::InvalidArgumentError(absl::StrCat("SNAPSHOT_END before the netns fds of all pods (",
                                                       pods_covered_, " of ", begin_.pod_count, " covered)"));
      }
      auto fragment = ParseSnapshotFragment(payload);
      if (!fragment.ok()) return fragment.status();
      if (fragment->offset != json_.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("SNAPSHOT_END fragment at offset ", fragment->offset, ", expected ", json_.size()));
      }
      if (fragment->data.size() > begin_.json_size - json_.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("SNAPSHOT_END data runs past the announced ", begin_.json_size, " bytes"));
      }
      json_.append(fragment->data);
      if (json_.size() == begin_.json_size) state_ = State::kComplete;
      return absl::OkStatus();
    }
    case MessageType::kHello:
      return absl::InvalidArgumentError("unexpected HELLO after the handshake");
    case MessageType::kAck:
      return absl::InvalidArgumentError("unexpected ACK: only the agent receives ACKs");
  }
  return absl::InvalidArgumentError("unknown message type");
}

absl::StatusOr<ReceivedSnapshot> SnapshotAssembler::Take() {
  if (state_ != State::kComplete) return absl::FailedPreconditionError("snapshot is not complete");
  state_ = State::kTaken;
  auto reject = [this](absl::Status st) {
    absl::Status out(st.code(), absl::StrCat("generation ", begin_.generation, " rejected: ", st.message()));
    out.SetPayload(kRejectedGenerationUrl, absl::Cord(absl::StrCat(begin_.generation)));
    return out;
  };
  auto snapshot = DecodeSnapshotJson(json_);
  std::string().swap(json_);
  if (!snapshot.ok()) return reject(snapshot.status());
  if (snapshot->generation != begin_.generation) {
    return reject(absl::InvalidArgumentError(absl::StrCat("JSON says generation ", snapshot->generation,
                                                          ", SNAPSHOT_BEGIN said ", begin_.generation)));
  }
  if (snapshot->pods.size() != begin_.pod_count) {
    return reject(absl::InvalidArgumentError(
        absl::StrCat("JSON has ", snapshot->pods.size(), " pods, SNAPSHOT_BEGIN said ", begin_.pod_count)));
  }
  if (!snapshot->remote_pods.empty() && version_ < kRemotePodsVersion) {
    return reject(absl::InvalidArgumentError(absl::StrCat("remote pods in protocol version ", version_,
                                                          "; they need version ", kRemotePodsVersion)));
  }
  if (!snapshot->authorization_policies.empty() && version_ < kAuthorizationPoliciesVersion) {
    return reject(absl::InvalidArgumentError(absl::StrCat("AuthorizationPolicies in protocol version ", version_,
                                                          "; they need version ",
                                                          kAuthorizationPoliciesVersion)));
  }
  if (snapshot->remote_pods.size() > options_.max_remote_pods) {
    return reject(
        absl::ResourceExhaustedError(absl::StrCat("snapshot has ", snapshot->remote_pods.size(),
                                                  " remote pods, the limit is ", options_.max_remote_pods)));
  }
  return ReceivedSnapshot{*std::move(snapshot), std::move(fds_), version_};
}

std::optional<uint64_t> RejectedGeneration(const absl::Status& status) {
  auto payload = status.GetPayload(kRejectedGenerationUrl);
  uint64_t generation = 0;
  if (!payload || !absl::SimpleAtoi(std::string(*payload), &generation)) return std::nullopt;
  return generation;
}

// --- socket I/O --------------------------------------------------------------

absl::Status SendRawMessage(int fd, std::string_view message, std::span<const int> fds, int timeout_ms) {
  constexpr size_t kMaxScmFds = 253;  // SCM_MAX_FD
  if (fds.size() > kMaxScmFds) return absl::InvalidArgumentError("too many fds for one message");
  iovec iov{const_cast<char*>(message.data()), message.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxScmFds)];
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  Deadline deadline(timeout_ms);
  for (;;) {
    ssize_t n = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      // SEQPACKET sends are atomic; a short count would be a kernel bug.
      if (static_cast<size_t>(n) != message.size()) return absl::InternalError("short SEQPACKET send");
      return absl::OkStatus();
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      RM_RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline, "send (the peer is not reading)"));
      continue;
    }
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
      return absl::UnavailableError("the peer closed the connection");
    }
    return ErrnoStatus("sendmsg", errno);
  }
}

absl::StatusOr<ReceivedMessage> ReceiveMessage(int fd, int timeout_ms) {
  // One byte more than the largest valid message, so MSG_TRUNC flags any
  // oversized one (SEQPACKET discards the rest of a truncated message).
  std::string buffer(kMaxMessageBytes + 1, '\0');
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  Deadline deadline(timeout_ms);
  for (;;) {
    iovec iov{buffer.data(), buffer.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        RM_RETURN_IF_ERROR(WaitFor(fd, POLLIN, deadline, "receive a message"));
        continue;
      }
      if (errno == ECONNRESET) return absl::UnavailableError("the peer closed the connection");
      return ErrnoStatus("recvmsg", errno);
    }
    ReceivedMessage out;
    // Own every descriptor before looking at anything else.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        out.fds.emplace_back(received);
      }
    }
    // We never send empty messages, so zero bytes is the orderly shutdown.
    if (n == 0) return absl::UnavailableError("the peer closed the connection");
    if (msg.msg_flags & MSG_TRUNC) {
      return absl::InvalidArgumentError(absl::StrCat("message larger than ", kMaxMessageBytes, " bytes"));
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      return absl::ResourceExhaustedError(
          "the kernel dropped file descriptors of a message (MSG_CTRUNC): too many fds, or RLIMIT_NOFILE "
          "reached");
    }
    auto parsed = ParseMessage(std::string_view(buffer.data(), static_cast<size_t>(n)));
    if (!parsed.ok()) return parsed.status();
    if (out.fds.size() != parsed->header.fd_count) {
      return absl::InvalidArgumentError(absl::StrCat(ToString(parsed->header.type), " announces ",
                                                     parsed->header.fd_count, " fds but ", out.fds.size(),
                                                     " arrived"));
    }
    RM_RETURN_IF_ERROR(CheckMessageVersion(parsed->header));
    out.header = parsed->header;
    out.payload = std::string(parsed->payload);
    return out;
  }
}

absl::StatusOr<uint16_t> Handshake(int fd, const Hello& local, int timeout_ms) {
  RM_RETURN_IF_ERROR(SendRawMessage(
      fd, EncodeMessage(MessageType::kHello, EncodeHello(local), 0, local.max_version), {}, timeout_ms));
  auto msg = ReceiveMessage(fd, timeout_ms);
  if (!msg.ok()) {
    return absl::Status(msg.status().code(), absl::StrCat("handshake: ", msg.status().message()));
  }
  if (msg->header.type != MessageType::kHello) {
    return absl::InvalidArgumentError(
        absl::StrCat("handshake: expected HELLO, got ", ToString(msg->header.type)));
  }
  auto peer = ParseHello(msg->payload);
  if (!peer.ok()) return peer.status();
  return NegotiateVersion(local, *peer);
}

// --- agent side --------------------------------------------------------------

absl::StatusOr<AgentServer> AgentServer::Listen(const std::string& path) {
  auto addr = UnixAddress(path);
  if (!addr.ok()) return addr.status();
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a socket; not removing it"));
    }
    // Only a socket nobody accepts on is stale; never steal a live agent's.
    UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!probe) return ErrnoStatus("socket", errno);
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) == 0) {
      return absl::AlreadyExistsError(absl::StrCat("another agent is listening on ", path));
    }
    if (errno != ECONNREFUSED && errno != ENOENT) return ErrnoStatus(absl::StrCat("probing ", path), errno);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(absl::StrCat("removing stale ", path), errno);
    }
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return ErrnoStatus("socket", errno);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    return ErrnoStatus(absl::StrCat("bind ", path), errno);
  }
  // Nobody can connect before listen(), so tightening the mode here leaves
  // no window in which another user could.
  if (::chmod(path.c_str(), 0600) != 0) return ErrnoStatus(absl::StrCat("chmod ", path), errno);
  if (::listen(fd.get(), 16) != 0) return ErrnoStatus(absl::StrCat("listen ", path), errno);
  return AgentServer(std::move(fd));
}

absl::StatusOr<UniqueFd> AgentServer::Accept() {
  auto peer = AcceptPeer();
  if (!peer.ok()) return peer.status();
  return std::move(peer->fd);
}

absl::StatusOr<PeerConnection> AgentServer::AcceptPeer() {
  UniqueFd conn;
  for (;;) {
    conn.Reset(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (conn) break;
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      RM_RETURN_IF_ERROR(WaitFor(fd_.get(), POLLIN, Deadline(-1), "accept"));
      continue;
    }
    return ErrnoStatus("accept", errno);
  }
  auto version = Handshake(conn.get(), LocalHello(Role::kAgent), kHandshakeTimeoutMs);
  if (!version.ok()) return version.status();
  return PeerConnection{std::move(conn), *version};
}

absl::Status SendSnapshot(int conn_fd, const Snapshot& snapshot, const std::vector<int>& netns_fds,
                          uint16_t version) {
  RM_RETURN_IF_ERROR(CheckSendVersion(version));
  if (netns_fds.size() != snapshot.pods.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(netns_fds.size(), " netns fds for ", snapshot.pods.size(), " pods; need one per pod"));
  }
  for (size_t i = 0; i < netns_fds.size(); ++i) {
    if (netns_fds[i] < -1)
      return absl::InvalidArgumentError(absl::StrCat("netns fd of pod ", i, " is invalid"));
  }
  if (snapshot.pods.size() > kDefaultMaxPods) {
    return absl::ResourceExhaustedError(absl::StrCat(snapshot.pods.size(), " pods exceed ", kDefaultMaxPods));
  }
  auto json = EncodeSnapshotJson(snapshot, -1, version);
  if (!json.ok()) return json.status();
  if (json->size() > kDefaultMaxSnapshotBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("snapshot JSON of ", json->size(),
                                                     " bytes exceeds the protocol limit of ",
                                                     kDefaultMaxSnapshotBytes));
  }
  const auto pod_count = static_cast<uint32_t>(snapshot.pods.size());
  RM_RETURN_IF_ERROR(SendMessage(conn_fd, version, MessageType::kSnapshotBegin,
                                 EncodeSnapshotBegin({snapshot.generation, pod_count, json->size()})));
  for (uint32_t first = 0; first < pod_count; first += kMaxFdsPerMessage) {
    NetnsFds chunk{first, {}};
    std::vector<int> fds;
    for (uint32_t i = first; i < std::min(pod_count, first + kMaxFdsPerMessage); ++i) {
      chunk.present.push_back(netns_fds[i] >= 0);
      if (netns_fds[i] >= 0) fds.push_back(netns_fds[i]);
    }
    RM_RETURN_IF_ERROR(SendMessage(conn_fd, version, MessageType::kNetnsFds, EncodeNetnsFds(chunk), fds));
  }
  std::string_view rest = *json;
  for (uint64_t offset = 0; !rest.empty();) {
    std::string_view piece = rest.substr(0, kMaxFragmentBytes);
    RM_RETURN_IF_ERROR(
        SendMessage(conn_fd, version, MessageType::kSnapshotEnd, EncodeSnapshotFragment(offset, piece)));
    offset += piece.size();
    rest.remove_prefix(piece.size());
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ReceiveAck(int conn_fd, int timeout_ms) {
  auto msg = ReceiveMessage(conn_fd, timeout_ms);
  if (!msg.ok()) return msg.status();
  if (msg->header.type != MessageType::kAck) {
    return absl::InvalidArgumentError(absl::StrCat("expected ACK, got ", ToString(msg->header.type)));
  }
  auto ack = ParseAck(msg->payload);
  if (!ack.ok()) return ack.status();
  if (!ack->error.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("proxy rejected generation ", ack->generation, ": ", ack->error));
  }
  return ack->generation;
}

// --- proxy side --------------------------------------------------------------

absl::StatusOr<UniqueFd> ConnectToAgent(const std::string& path) {
  auto peer = ConnectToAgentPeer(path);
  if (!peer.ok()) return peer.status();
  return std::move(peer->fd);
}

absl::StatusOr<PeerConnection> ConnectToAgentPeer(const std::string& path) {
  auto addr = UnixAddress(path);
  if (!addr.ok()) return addr.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket", errno);
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    if (err == ENOENT || err == ECONNREFUSED) {
      return absl::UnavailableError(
          absl::StrCat("no agent is listening on ", path, ": ", std::strerror(err)));
    }
    return ErrnoStatus(absl::StrCat("connect ", path), err);
  }
  auto version = Handshake(fd.get(), LocalHello(Role::kProxy), kHandshakeTimeoutMs);
  if (!version.ok()) return version.status();
  return PeerConnection{std::move(fd), *version};
}

absl::StatusOr<ReceivedSnapshot> ReceiveSnapshot(int fd) { return ReceiveSnapshot(fd, ReceiveOptions{}); }

absl::StatusOr<ReceivedSnapshot> ReceiveSnapshot(int fd, const ReceiveOptions& options) {
  SnapshotAssembler assembler(options);
  while (!assembler.complete()) {
    auto msg = ReceiveMessage(fd, -1);
    if (!msg.ok()) return msg.status();
    RM_RETURN_IF_ERROR(assembler.Feed(msg->header, msg->payload, std::move(msg->fds)));
  }
  return assembler.Take();
}

absl::Status SendAck(int fd, uint64_t generation, std::string_view error, uint16_t version) {
  RM_RETURN_IF_ERROR(CheckSendVersion(version));
  return SendMessage(fd, version, MessageType::kAck,
                     EncodeAck(Ack{generation, std::string(error.substr(0, kMaxAckErrorBytes))}));
}

}  // namespace ringmesh::proto
