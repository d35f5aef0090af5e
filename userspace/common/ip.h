// IP addresses and CIDRs as 16-byte values (IPv4 v4-mapped), matching the
// BPF ABI (bpf/include/ringmesh/abi.h), plus parsing and formatting.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ringmesh {

class IpAddress {
 public:
  IpAddress() = default;
  static IpAddress FromV4(uint32_t addr_be);
  static IpAddress FromV6(const uint8_t bytes[16]);
  static std::optional<IpAddress> Parse(std::string_view text);

  bool is_v4() const;
  // 0.0.0.0 or :: (a wildcard bind address).
  bool is_unspecified() const;
  uint32_t v4_be() const;  // only when is_v4()
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  int family() const { return is_v4() ? AF_INET : AF_INET6; }
  std::string ToString() const;

  auto operator<=>(const IpAddress&) const = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

struct Cidr {
  IpAddress base;
  uint8_t prefix_len = 0;  // in the address's own family (0..32 or 0..128)

  static std::optional<Cidr> Parse(std::string_view text);
  bool Contains(const IpAddress& ip) const;
  std::string ToString() const;
  auto operator<=>(const Cidr&) const = default;
};

// A socket address (IPv4 or IPv6) with helpers for the sockaddr API.
struct SocketAddress {
  IpAddress ip;
  uint16_t port = 0;  // host order

  static std::optional<SocketAddress> Parse(std::string_view text);  // "1.2.3.4:80", "[::1]:80"
  static SocketAddress FromSockaddr(const sockaddr_storage& ss);
  socklen_t ToSockaddr(sockaddr_storage* ss) const;  // native family
  std::string ToString() const;
  auto operator<=>(const SocketAddress&) const = default;
};

}  // namespace ringmesh
