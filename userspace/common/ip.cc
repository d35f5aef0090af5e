#include "userspace/common/ip.h"

#include <arpa/inet.h>

#include <cstring>

namespace ringmesh {
namespace {
constexpr std::array<uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
}  // namespace

IpAddress IpAddress::FromV4(uint32_t addr_be) {
  IpAddress a;
  std::memcpy(a.bytes_.data(), kV4MappedPrefix.data(), 12);
  std::memcpy(a.bytes_.data() + 12, &addr_be, 4);
  return a;
}

IpAddress IpAddress::FromV6(const uint8_t bytes[16]) {
  IpAddress a;
  std::memcpy(a.bytes_.data(), bytes, 16);
  return a;
}

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN) return std::nullopt;
  std::string s(text);
  in_addr v4;
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) return FromV4(v4.s_addr);
  in6_addr v6;
  if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) return FromV6(v6.s6_addr);
  return std::nullopt;
}

bool IpAddress::is_v4() const { return std::memcmp(bytes_.data(), kV4MappedPrefix.data(), 12) == 0; }

bool IpAddress::is_unspecified() const {
  if (is_v4()) return v4_be() == 0;
  for (uint8_t b : bytes_) {
    if (b != 0) return false;
  }
  return true;
}

uint32_t IpAddress::v4_be() const {
  uint32_t v;
  std::memcpy(&v, bytes_.data() + 12, 4);
  return v;
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (is_v4()) {
    in_addr v4{v4_be()};
    inet_ntop(AF_INET, &v4, buf, sizeof(buf));
  } else {
    inet_ntop(AF_INET6, bytes_.data(), buf, sizeof(buf));
  }
  return buf;
}

std::optional<Cidr> Cidr::Parse(std::string_view text) {
  auto slash = text.find('/');
  auto ip = IpAddress::Parse(text.substr(0, slash));
  if (!ip) return std::nullopt;
  int max = ip->is_v4() ? 32 : 128;
  int len = max;
  if (slash != std::string_view::npos) {
    auto digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    len = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      len = len * 10 + (c - '0');
    }
    if (len > max) return std::nullopt;
  }
  Cidr c{*ip, static_cast<uint8_t>(len)};
  // Normalise: clear host bits so equal networks compare equal.
  auto bytes = ip->bytes();
  int bits = (ip->is_v4() ? 96 : 0) + len;
  for (int i = 0; i < 16; ++i) {
    int keep = bits - i * 8;
    if (keep >= 8) continue;
    bytes[i] = keep <= 0 ? 0 : static_cast<uint8_t>(bytes[i] & (0xff << (8 - keep)));
  }
  c.base = IpAddress::FromV6(bytes.data());
  return c;
}

bool Cidr::Contains(const IpAddress& ip) const {
  if (ip.is_v4() != base.is_v4()) return false;
  int bits = (base.is_v4() ? 96 : 0) + prefix_len;
  const auto& a = ip.bytes();
  const auto& b = base.bytes();
  for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
    uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
    if ((a[i] & mask) != (b[i] & mask)) return false;
  }
  return true;
}

std::string Cidr::ToString() const { return base.ToString() + "/" + std::to_string(prefix_len); }

std::optional<SocketAddress> SocketAddress::Parse(std::string_view text) {
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto ip = IpAddress::Parse(host);
  if (!ip || port.empty() || port.size() > 5) return std::nullopt;
  uint32_t p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    p = p * 10 + static_cast<uint32_t>(c - '0');
  }
  if (p > 65535) return std::nullopt;
  return SocketAddress{*ip, static_cast<uint16_t>(p)};
}

SocketAddress SocketAddress::FromSockaddr(const sockaddr_storage& ss) {
  SocketAddress a;
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    a.ip = IpAddress::FromV4(sin->sin_addr.s_addr);
    a.port = ntohs(sin->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    a.ip = IpAddress::FromV6(sin6->sin6_addr.s6_addr);
    a.port = ntohs(sin6->sin6_port);
  }
  return a;
}

socklen_t SocketAddress::ToSockaddr(sockaddr_storage* ss) const {
  std::memset(ss, 0, sizeof(*ss));
  if (ip.is_v4()) {
    auto* sin = reinterpret_cast<sockaddr_in*>(ss);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = ip.v4_be();
    sin->sin_port = htons(port);
    return sizeof(sockaddr_in);
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(ss);
  sin6->sin6_family = AF_INET6;
  std::memcpy(sin6->sin6_addr.s6_addr, ip.bytes().data(), 16);
  sin6->sin6_port = htons(port);
  return sizeof(sockaddr_in6);
}

std::string SocketAddress::ToString() const {
  return ip.is_v4() ? ip.ToString() + ":" + std::to_string(port) : "[" + ip.ToString() + "]:" + std::to_string(port);
}

}  // namespace ringmesh
