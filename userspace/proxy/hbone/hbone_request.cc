// HBONE CONNECT heads: building (client) and strict parsing (server).
#include "userspace/proxy/hbone/hbone_request.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace ringmesh::proxy::hbone {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLowerHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); }

// RFC 9110 tchar.
bool IsTchar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool IsToken(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), IsTchar); }

// W3C baggage-octet: printable US-ASCII except DQUOTE, comma, semicolon,
// backslash and space.
bool IsBaggageValue(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c > 0x20 && c < 0x7f && c != '"' && c != ',' && c != ';' && c != '\\';
  });
}

std::optional<uint16_t> ParsePort(std::string_view s) {
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  uint32_t p = 0;
  for (char c : s) {
    if (!IsDigit(c)) return std::nullopt;
    p = p * 10 + static_cast<uint32_t>(c - '0');
  }
  if (p == 0 || p > 65535) return std::nullopt;
  return static_cast<uint16_t>(p);
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool IsAllZero(std::string_view hex) {
  return std::all_of(hex.begin(), hex.end(), [](char c) { return c == '0'; });
}

std::string Hex(const uint8_t* p, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 0xf]);
  }
  return out;
}

bool IsReservedField(std::string_view lower_name) {
  return lower_name == "forwarded" || lower_name == "baggage" || lower_name == "traceparent";
}

}  // namespace

absl::StatusOr<SocketAddress> ParseConnectAuthority(std::string_view authority) {
  if (authority.empty() || authority.size() > kMaxAuthorityBytes) {
    return absl::InvalidArgumentError("authority: empty or too long");
  }
  std::string_view host, port;
  bool bracketed = authority.front() == '[';
  if (bracketed) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos || close + 1 >= authority.size() || authority[close + 1] != ':') {
      return absl::InvalidArgumentError("authority: malformed [ipv6]:port");
    }
    host = authority.substr(1, close - 1);
    port = authority.substr(close + 2);
  } else {
    size_t colon = authority.rfind(':');
    if (colon == std::string_view::npos) return absl::InvalidArgumentError("authority: no port");
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  // inet_pton would also take a v4-mapped IPv6 text; the bracket rule
  // (RFC 3986 IP-literal) is checked on the text, not the parsed value.
  bool host_has_colon = host.find(':') != std::string_view::npos;
  if (bracketed != host_has_colon) return absl::InvalidArgumentError("authority: IPv6 must be in brackets");
  auto ip = IpAddress::Parse(host);
  if (!ip) return absl::InvalidArgumentError("authority: host is not an IP address");
  auto p = ParsePort(port);
  if (!p) return absl::InvalidArgumentError("authority: bad port");
  if (ip->is_unspecified()) return absl::InvalidArgumentError("authority: unspecified address");
  return SocketAddress{*ip, *p};
}

std::string FormatConnectAuthority(const SocketAddress& target) {
  if (target.ip.is_v4()) return absl::StrCat(target.ip.ToString(), ":", target.port);
  return absl::StrCat("[", target.ip.ToString(), "]:", target.port);
}

std::string FormatForwardedFor(const IpAddress& ip) {
  // RFC 7239 §6: an IPv6 node name is bracketed, and brackets and colons
  // are not token characters, so the value must be a quoted-string.
  if (ip.is_v4()) return "for=" + ip.ToString();
  return absl::StrCat("for=\"[", ip.ToString(), "]\"");
}

std::optional<IpAddress> ParseForwardedFor(std::string_view forwarded) {
  if (forwarded.size() > 4096) return std::nullopt;
  // forwarded-element *( "," forwarded-element ); pairs split by ";". Only
  // the first element's `for` counts: it is the one the client's proxy set.
  size_t end = forwarded.find(',');
  std::string_view element = forwarded.substr(0, end);
  while (!element.empty()) {
    size_t semi = element.find(';');
    std::string_view pair = TrimOws(element.substr(0, semi));
    element = semi == std::string_view::npos ? std::string_view() : element.substr(semi + 1);
    if (pair.size() < 4 || absl::AsciiStrToLower(std::string(pair.substr(0, 4))) != "for=") continue;
    std::string_view v = pair.substr(4);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    if (!v.empty() && v.front() == '[') {
      size_t close = v.find(']');
      if (close == std::string_view::npos) return std::nullopt;
      std::string_view rest = v.substr(close + 1);
      if (!rest.empty() && rest.front() != ':') return std::nullopt;
      return IpAddress::Parse(v.substr(1, close - 1));
    }
    size_t colon = v.find(':');
    if (colon != std::string_view::npos && v.find(':', colon + 1) != std::string_view::npos) {
      return std::nullopt;  // unbracketed IPv6 is not valid here
    }
    auto ip = IpAddress::Parse(v.substr(0, colon));
    if (!ip || !ip->is_v4()) return std::nullopt;
    return ip;
  }
  return std::nullopt;
}

std::string MakeTraceparent() {
  uint8_t trace[16], span[8];
  // All-zero ids are invalid; RAND_bytes failing or returning zeros is
  // astronomically unlikely, but a bad header is worse than a fixed bit.
  if (RAND_bytes(trace, sizeof(trace)) != 1) std::memset(trace, 0, sizeof(trace));
  if (RAND_bytes(span, sizeof(span)) != 1) std::memset(span, 0, sizeof(span));
  trace[15] |= 1;
  span[7] |= 1;
  return absl::StrCat("00-", Hex(trace, sizeof(trace)), "-", Hex(span, sizeof(span)), "-01");
}

bool IsValidTraceparent(std::string_view v) {
  if (v.size() != kMaxTraceparentBytes) return false;
  if (v.substr(0, 3) != "00-" || v[35] != '-' || v[52] != '-') return false;
  for (size_t i : {size_t{3}, size_t{36}, size_t{53}}) {
    size_t len = i == 3 ? 32 : i == 36 ? 16 : 2;
    std::string_view part = v.substr(i, len);
    if (!std::all_of(part.begin(), part.end(), IsLowerHex)) return false;
  }
  return !IsAllZero(v.substr(3, 32)) && !IsAllZero(v.substr(36, 16));
}

std::string FormatBaggage(const std::vector<std::pair<std::string, std::string>>& members) {
  std::string out;
  for (const auto& [k, v] : members) {
    if (!IsToken(k) || !IsBaggageValue(v)) continue;
    if (!out.empty()) out += ",";
    absl::StrAppend(&out, k, "=", v);
  }
  return out;
}

http::Http2Headers BuildConnectRequest(const SocketAddress& target, const HboneConnectOptions& options) {
  http::Http2Headers h;
  h.method = "CONNECT";
  h.authority = FormatConnectAuthority(target);
  if (options.source_ip) h.fields.emplace_back("forwarded", FormatForwardedFor(*options.source_ip));
  std::string baggage = FormatBaggage(options.baggage);
  if (!baggage.empty()) h.fields.emplace_back("baggage", std::move(baggage));
  h.fields.emplace_back("traceparent",
                        IsValidTraceparent(options.traceparent) ? options.traceparent : MakeTraceparent());
  for (const auto& [name, value] : options.extra_headers) {
    std::string lower = absl::AsciiStrToLower(name);
    if (lower.empty() || lower[0] == ':' || IsReservedField(lower)) continue;
    h.fields.emplace_back(std::move(lower), value);
  }
  return h;
}

absl::StatusOr<HboneConnectRequest> ParseConnectRequest(const http::Http2Headers& head) {
  if (head.method != "CONNECT") return absl::InvalidArgumentError("not a CONNECT");
  if (!head.scheme.empty() || !head.path.empty()) {
    return absl::InvalidArgumentError("CONNECT with :scheme/:path (extended CONNECT) is not HBONE");
  }
  auto target = ParseConnectAuthority(head.authority);
  if (!target.ok()) return target.status();
  HboneConnectRequest req;
  req.target = *target;
  for (const auto& [name, value] : head.fields) {
    if (name == "forwarded" && !req.forwarded_for) req.forwarded_for = ParseForwardedFor(value);
    if (name == "traceparent" && req.traceparent.empty() && IsValidTraceparent(value))
      req.traceparent = value;
  }
  req.headers = head.fields;
  return req;
}

}  // namespace ringmesh::proxy::hbone
