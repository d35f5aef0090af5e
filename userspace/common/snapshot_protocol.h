// The agent<->proxy snapshot protocol over a Unix SOCK_SEQPACKET socket.
//
// The agent listens (AgentServer), the proxy connects (ConnectToAgent). Both
// first exchange HELLO and check that their protocol version ranges overlap,
// so an agent and a proxy of different releases either agree or fail with a
// message that says which one to upgrade. The agent then pushes whole
// snapshots; the proxy answers each with an ACK.
//
// Wire format. Every SEQPACKET message (one send = one message; the kernel
// keeps boundaries) is a 16-byte header followed by a payload; all integers
// are little-endian:
//
//   offset 0  magic "RMSP"
//          4  u16 version       protocol version the payload is encoded in
//          6  u16 type          MessageType
//          8  u32 payload_len   must equal the bytes that follow the header
//         12  u32 fd_count      SCM_RIGHTS fds attached to this message
//
// HELLO (the header layout and this payload are frozen for all versions, so
// any two releases can at least tell each other what they speak; in HELLO
// the header version is the sender's max version):
//   u16 role (1 agent, 2 proxy), u16 min_version, u16 max_version,
//   u16 release_len, release bytes (<= 128)
//
// A snapshot is a sequence of messages, nothing else may interleave:
//   SNAPSHOT_BEGIN  u64 generation, u32 pod_count, u32 reserved (0),
//                   u64 json_size (1..max snapshot bytes, default 64 MiB)
//   NETNS_FDS       u32 first_pod, u32 count (1..200), u8 present[count]
//                   Chunks cover pods [0, pod_count) in order without gaps;
//                   present[i] says whether pod first_pod+i has a netns fd.
//                   The fds of the present pods travel in this message's
//                   SCM_RIGHTS, in pod order; fd_count == number of present.
//   SNAPSHOT_END    u64 offset, then up to 64 KiB of the snapshot JSON
//                   (snapshot_json.h). A SEQPACKET message must fit in the
//                   socket send buffer (~200 KiB by default), so the JSON is
//                   split into fragments that are sent in order; offset is
//                   the position of the fragment in the JSON, and the
//                   snapshot is complete when offset + len == json_size
//                   (announced in SNAPSHOT_BEGIN, so the receiver bounds the
//                   allocation before any data arrives).
// ACK (proxy -> agent): u64 generation, u32 error_len, error text (<= 4096).
//   An empty error means the generation is applied.
//
// Versions:
//   1  the first release.
//   2  the snapshot JSON may carry `remotePods` (mesh pods of other nodes,
//      snapshot_json.h). Every other payload is unchanged.
//   3  the snapshot JSON may carry `authorizationPolicies`.
// Receivers accept any version in their own [min, max] range, so they need
// no per-connection state; every message of one snapshot must be in the
// same version, and a snapshot must not carry a field its version does not
// have.
// Senders write the version negotiated for the connection (AcceptPeer,
// ConnectToAgentPeer): to a proxy of version 1 the agent sends its
// snapshots without the remote pods, so that proxy keeps working and treats
// their IPs as it always did (not meshed); to one of version 2, without the
// AuthorizationPolicies, which it could not enforce (the agent warns: while
// it runs, the node's pods are not protected by them). The proxy ACKs in
// the version the agent speaks.
//
// Every received fd is owned (UniqueFd) as soon as recvmsg returns, before
// anything is validated, so a malformed message never leaks descriptors.
// After any error other than a rejected-but-complete snapshot (see
// RejectedGeneration) the stream is out of step: close the connection.
//
// Usage, agent:
//   ASSIGN_OR_RETURN(auto server, proto::AgentServer::Listen("/run/ringmesh/agent.sock"));
//   // when server.fd() is readable:
//   ASSIGN_OR_RETURN(proto::PeerConnection proxy, server.AcceptPeer());
//   RETURN_IF_ERROR(proto::SendSnapshot(proxy.fd.get(), snapshot, netns_fds, proxy.version));
//   ASSIGN_OR_RETURN(uint64_t applied, proto::ReceiveAck(proxy.fd.get(), 5000));
// Usage, proxy:
//   ASSIGN_OR_RETURN(proto::PeerConnection agent, proto::ConnectToAgentPeer(path));
//   for (;;) {
//     auto snap = proto::ReceiveSnapshot(agent.fd.get());
//     if (!snap.ok()) {
//       auto g = proto::RejectedGeneration(snap.status());
//       if (!g) break;  // stream out of step: reconnect
//       RETURN_IF_ERROR(proto::SendAck(agent.fd.get(), *g, std::string(snap.status().message()),
//                                      agent.version));
//       continue;
//     }
//     ... apply ...; RETURN_IF_ERROR(proto::SendAck(agent.fd.get(), gen, "", agent.version));
//   }
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "userspace/common/snapshot.h"
#include "userspace/common/snapshot_json.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::proto {

// Versions this build speaks. Bump kMaxProtocolVersion whenever a payload or
// the snapshot JSON schema changes; raise kMinProtocolVersion when support
// for an old encoding is dropped.
inline constexpr uint16_t kMinProtocolVersion = 1;
inline constexpr uint16_t kMaxProtocolVersion = 3;
static_assert(kMaxProtocolVersion == kJsonLatestSchema, "the snapshot JSON's schema is the protocol's");
// The first versions whose snapshot JSON may carry remote pods, policies.
inline constexpr uint16_t kRemotePodsVersion = kJsonRemotePodsSince;
inline constexpr uint16_t kAuthorizationPoliciesVersion = kJsonAuthorizationPoliciesSince;

inline constexpr char kMagic[4] = {'R', 'M', 'S', 'P'};
inline constexpr size_t kHeaderSize = 16;
inline constexpr uint32_t kMaxFdsPerMessage = 200;      // below the kernel's SCM_MAX_FD (253)
inline constexpr size_t kMaxFragmentBytes = 64 * 1024;  // JSON bytes per SNAPSHOT_END message
inline constexpr size_t kMaxPayloadBytes = kMaxFragmentBytes + 8;
inline constexpr size_t kMaxMessageBytes = kHeaderSize + kMaxPayloadBytes;
inline constexpr size_t kMaxReleaseBytes = 128;
inline constexpr size_t kMaxAckErrorBytes = 4096;
inline constexpr size_t kDefaultMaxSnapshotBytes = 64 << 20;
inline constexpr uint32_t kDefaultMaxPods = 65536;
// Above the node file's default (agent::kDefaultMaxRemotePods): the JSON
// size bound alone would admit ~1M, a quarter GiB in the proxy.
inline constexpr uint32_t kDefaultMaxRemotePods = 1 << 18;
// A peer that connects and says nothing must not stall the agent forever.
inline constexpr int kHandshakeTimeoutMs = 5000;
// Per message: a proxy that stops reading makes SendSnapshot fail, not hang.
inline constexpr int kSendTimeoutMs = 10000;

enum class MessageType : uint16_t {
  kHello = 1,
  kSnapshotBegin = 2,
  kNetnsFds = 3,
  kSnapshotEnd = 4,
  kAck = 5,
};
const char* ToString(MessageType type);

enum class Role : uint16_t { kAgent = 1, kProxy = 2 };
const char* ToString(Role role);

struct Header {
  uint16_t version = kMaxProtocolVersion;
  MessageType type = MessageType::kHello;
  uint32_t payload_len = 0;
  uint32_t fd_count = 0;
  bool operator==(const Header&) const = default;
};

struct Hello {
  Role role = Role::kAgent;
  uint16_t min_version = kMinProtocolVersion;
  uint16_t max_version = kMaxProtocolVersion;
  std::string release;
  bool operator==(const Hello&) const = default;
};

struct SnapshotBegin {
  uint64_t generation = 0;
  uint32_t pod_count = 0;
  uint64_t json_size = 0;
  bool operator==(const SnapshotBegin&) const = default;
};

struct NetnsFds {
  uint32_t first_pod = 0;
  std::vector<bool> present;  // one per pod in [first_pod, first_pod + present.size())
  bool operator==(const NetnsFds&) const = default;
};

struct SnapshotFragment {
  uint64_t offset = 0;
  std::string_view data;  // points into the parsed payload
};

struct Ack {
  uint64_t generation = 0;
  std::string error;  // empty: applied
  bool operator==(const Ack&) const = default;
};

// This build's release string (the project version).
std::string_view Release();
Hello LocalHello(Role role);

// --- pure codec (no I/O; fuzzed) ------------------------------------------

std::string EncodeHeader(const Header& header);
// A whole message: header (payload_len filled in) + payload.
std::string EncodeMessage(MessageType type, std::string_view payload, uint32_t fd_count = 0,
                          uint16_t version = kMaxProtocolVersion);
std::string EncodeHello(const Hello& hello);  // payload only, like the rest
std::string EncodeSnapshotBegin(const SnapshotBegin& begin);
std::string EncodeNetnsFds(const NetnsFds& chunk);
std::string EncodeSnapshotFragment(uint64_t offset, std::string_view data);
std::string EncodeAck(const Ack& ack);

// Checks magic, type and the static bounds of payload_len and fd_count; only
// the first kHeaderSize bytes are read. The version is not checked here (a
// HELLO from any version must be readable); see CheckMessageVersion.
[[nodiscard]] absl::StatusOr<Header> ParseHeader(std::string_view bytes);
// Header plus the payload that follows it; payload_len must match exactly.
struct Message {
  Header header;
  std::string_view payload;
};
[[nodiscard]] absl::StatusOr<Message> ParseMessage(std::string_view bytes);
[[nodiscard]] absl::Status CheckMessageVersion(const Header& header);

[[nodiscard]] absl::StatusOr<Hello> ParseHello(std::string_view payload);
[[nodiscard]] absl::StatusOr<SnapshotBegin> ParseSnapshotBegin(std::string_view payload);
[[nodiscard]] absl::StatusOr<NetnsFds> ParseNetnsFds(std::string_view payload, uint32_t fd_count);
[[nodiscard]] absl::StatusOr<SnapshotFragment> ParseSnapshotFragment(std::string_view payload);
[[nodiscard]] absl::StatusOr<Ack> ParseAck(std::string_view payload);

// The version both will use (the highest common one), or FailedPrecondition
// naming both ranges and releases and which side to upgrade, e.g.
//   agent (release 0.3.0) speaks protocol 2..3, proxy (release 0.1.0) speaks
//   1..1: upgrade the proxy
// The text is the same on both ends, so both logs say the same thing.
[[nodiscard]] absl::StatusOr<uint16_t> NegotiateVersion(const Hello& local, const Hello& peer);

struct ReceivedSnapshot {
  Snapshot snapshot;
  std::vector<UniqueFd> netns_fds;         // one per pod, in pod order; invalid = none
  uint16_t version = kMaxProtocolVersion;  // the version it was encoded in
};

struct ReceiveOptions {
  size_t max_snapshot_bytes = kDefaultMaxSnapshotBytes;  // JSON size bound
  uint32_t max_pods = kDefaultMaxPods;
  uint32_t max_remote_pods = kDefaultMaxRemotePods;
};

// A connected peer after the handshake, and the version both will use.
struct PeerConnection {
  UniqueFd fd;
  uint16_t version = kMaxProtocolVersion;
};

// Reassembles one snapshot from its messages and owns the fds received so
// far; dropping it closes them. ReceiveSnapshot drives it from a socket, the
// fuzzer drives it from bytes.
class SnapshotAssembler {
 public:
  explicit SnapshotAssembler(ReceiveOptions options = {}) : options_(options) {}

  // `fds` are the descriptors that arrived with this message.
  [[nodiscard]] absl::Status Feed(const Header& header, std::string_view payload, std::vector<UniqueFd> fds);
  bool complete() const { return state_ == State::kComplete; }
  // After complete(): decodes the JSON and hands out snapshot and fds.
  [[nodiscard]] absl::StatusOr<ReceivedSnapshot> Take();

 private:
  enum class State { kIdle, kFds, kJson, kComplete, kTaken };
  ReceiveOptions options_;
  State state_ = State::kIdle;
  SnapshotBegin begin_;
  uint16_t version_ = 0;  // of SNAPSHOT_BEGIN; the rest must match
  std::vector<UniqueFd> fds_;
  uint32_t pods_covered_ = 0;
  std::string json_;
};

// When ReceiveSnapshot failed only because the complete snapshot was
// rejected (bad JSON, inconsistent counts), the stream is still in step and
// this returns its generation: ACK it with the error and keep the
// connection. Otherwise nullopt: close the connection.
std::optional<uint64_t> RejectedGeneration(const absl::Status& status);

// --- socket I/O -----------------------------------------------------------

// Sends one message (already encoded) with optional SCM_RIGHTS fds. Works on
// blocking and non-blocking sockets; waits at most timeout_ms (-1: forever)
// for buffer space.
[[nodiscard]] absl::Status SendRawMessage(int fd, std::string_view message, std::span<const int> fds,
                                          int timeout_ms = kSendTimeoutMs);

struct ReceivedMessage {
  Header header;
  std::string payload;
  std::vector<UniqueFd> fds;
};
// Receives one message and checks its framing (header, length, fd count,
// version for non-HELLO). timeout_ms -1 waits forever. Unavailable when the
// peer closed the connection, DeadlineExceeded on timeout.
[[nodiscard]] absl::StatusOr<ReceivedMessage> ReceiveMessage(int fd, int timeout_ms);

// Sends our HELLO, reads the peer's and negotiates. Both ends run it.
[[nodiscard]] absl::StatusOr<uint16_t> Handshake(int fd, const Hello& local,
                                                 int timeout_ms = kHandshakeTimeoutMs);

// --- agent side -----------------------------------------------------------

class AgentServer {
 public:
  // Removes a stale socket at `path` (refuses if something other than a
  // socket is there, or if another agent still accepts on it) and listens
  // with mode 0600. The socket file is left in place on destruction; the
  // next Listen removes it.
  [[nodiscard]] static absl::StatusOr<AgentServer> Listen(const std::string& path);

  // Non-blocking listening socket, for the agent's poll loop.
  int fd() const { return fd_.get(); }
  // Waits for a connection and runs the handshake (at most
  // kHandshakeTimeoutMs once connected). A failed handshake closes that
  // connection and returns why; the server stays usable.
  [[nodiscard]] absl::StatusOr<PeerConnection> AcceptPeer();
  // AcceptPeer without the version: only for peers known to be of this
  // build (tests), as SendSnapshot then writes kMaxProtocolVersion.
  [[nodiscard]] absl::StatusOr<UniqueFd> Accept();

 private:
  explicit AgentServer(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// netns_fds: one per pod of `snapshot`, -1 for none; they stay owned by the
// caller (the kernel duplicates them into the message). `version` is the
// connection's (PeerConnection::version); the fields its version does not
// have are left out (remote pods below kRemotePodsVersion, policies below
// kAuthorizationPoliciesVersion).
[[nodiscard]] absl::Status SendSnapshot(int conn_fd, const Snapshot& snapshot,
                                        const std::vector<int>& netns_fds,
                                        uint16_t version = kMaxProtocolVersion);
// The generation the proxy applied, or the error it reported for it.
[[nodiscard]] absl::StatusOr<uint64_t> ReceiveAck(int conn_fd, int timeout_ms);

// --- proxy side -----------------------------------------------------------

[[nodiscard]] absl::StatusOr<PeerConnection> ConnectToAgentPeer(const std::string& path);
// ConnectToAgentPeer without the version: only for agents known to be of
// this build (tests), as SendAck then writes kMaxProtocolVersion.
[[nodiscard]] absl::StatusOr<UniqueFd> ConnectToAgent(const std::string& path);
// Blocks until a whole snapshot arrived; Unavailable when the agent closed.
[[nodiscard]] absl::StatusOr<ReceivedSnapshot> ReceiveSnapshot(int fd);
[[nodiscard]] absl::StatusOr<ReceivedSnapshot> ReceiveSnapshot(int fd, const ReceiveOptions& options);
// error is truncated to kMaxAckErrorBytes. `version`: the connection's.
[[nodiscard]] absl::Status SendAck(int fd, uint64_t generation, std::string_view error,
                                   uint16_t version = kMaxProtocolVersion);

}  // namespace ringmesh::proto
