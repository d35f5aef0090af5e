// The HBONE CONNECT request on the wire, as Istio ambient's ztunnel writes and
// reads it: building the client's header block and checking a server's
// received one. Pure functions over Http2Headers (no session, no I/O), so
// the parser can be fuzzed on its own.
//
//   HboneConnectOptions opts{.source_ip = src.ip, .baggage = {{"k8s.namespace.name", "default"}}};
//   http::Http2Headers h = BuildConnectRequest(target, opts);   // client
//   auto req = ParseConnectRequest(received);                   // server
//   if (!req.ok()) answer 400;
//
// Wire details (ztunnel): `:method CONNECT`, `:authority <ip>:<port>` with
// IPv6 in brackets, no :scheme or :path, `forwarded: for=<source ip>` quoted
// as RFC 7239 §6 requires for IPv6, `baggage` (W3C, optional), `traceparent`
// (W3C trace context; one is made when the caller has none).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "userspace/common/ip.h"
#include "userspace/proxy/http/http2_session.h"

namespace ringmesh::proxy::hbone {

inline constexpr uint16_t kHbonePort = 15008;

// Bounds on what the server keeps of a request: everything else of the head
// is already capped by Http2Options::max_header_list_size.
inline constexpr size_t kMaxAuthorityBytes = 64;  // "[v6 with zone-less max]:65535" is 47
inline constexpr size_t kMaxTraceparentBytes = 55;

struct HboneConnectOptions {
  // Written as `forwarded: for=...` when set: the original client address.
  std::optional<IpAddress> source_ip;
  // W3C baggage members, e.g. {"k8s.namespace.name", "default"},
  // {"k8s.pod.name", "web-0"}; omitted when empty. Keys must be tokens and
  // values baggage-octets (no spaces, commas, semicolons, backslash, quote).
  std::vector<std::pair<std::string, std::string>> baggage;
  // A W3C traceparent to continue; a fresh one is made when empty or invalid.
  std::string traceparent;
  // More fields, sent as given (lowercased). Pseudo-headers and the three
  // above are ignored here.
  std::vector<std::pair<std::string, std::string>> extra_headers;
};

// `ip:port` / `[v6]:port` (IPv6 only in brackets, IPv4 never), port 1..65535
// in decimal without sign or leading zeros.
absl::StatusOr<SocketAddress> ParseConnectAuthority(std::string_view authority);
// The inverse: what goes into :authority.
std::string FormatConnectAuthority(const SocketAddress& target);

// `for=10.0.0.1` or `for="[2001:db8::1]"`.
std::string FormatForwardedFor(const IpAddress& ip);
// The first `for=` of a Forwarded value that is an IP address (quoted or
// not, IPv6 in brackets, an optional port ignored); nullopt when there is
// none or it is obfuscated/unknown.
std::optional<IpAddress> ParseForwardedFor(std::string_view forwarded);

// "00-<32 hex trace id>-<16 hex parent id>-01" from OpenSSL's RNG.
std::string MakeTraceparent();
// Version 00 form only (55 chars, lowercase hex, ids not all zero).
bool IsValidTraceparent(std::string_view value);

// Baggage members joined as W3C writes them; members with an invalid key or
// value are dropped (they would make the whole header invalid).
std::string FormatBaggage(const std::vector<std::pair<std::string, std::string>>& members);

http::Http2Headers BuildConnectRequest(const SocketAddress& target, const HboneConnectOptions& options);

// What a server learns from a CONNECT head.
struct HboneConnectRequest {
  SocketAddress target;
  std::optional<IpAddress> forwarded_for;
  std::string traceparent;  // empty when absent or invalid
  // The regular fields as received (for policy and logs).
  std::vector<std::pair<std::string, std::string>> headers;
};

// InvalidArgument when the head is not an HBONE CONNECT: another method, a
// :scheme or :path (extended CONNECT is not HBONE), a missing or malformed
// :authority. Answered with 400.
absl::StatusOr<HboneConnectRequest> ParseConnectRequest(const http::Http2Headers& head);

}  // namespace ringmesh::proxy::hbone
