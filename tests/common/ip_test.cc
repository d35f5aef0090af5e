#include "userspace/common/ip.h"

#include <gtest/gtest.h>

namespace ringmesh {
namespace {

TEST(IpAddress, ParsesV4AsMapped) {
  auto a = IpAddress::Parse("198.18.0.1");
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->is_v4());
  EXPECT_EQ(a->bytes()[10], 0xff);
  EXPECT_EQ(a->bytes()[12], 198);
  EXPECT_EQ(a->ToString(), "198.18.0.1");
}

TEST(IpAddress, ParsesV6) {
  auto a = IpAddress::Parse("2001:db8::1");
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->is_v4());
  EXPECT_EQ(a->ToString(), "2001:db8::1");
}

TEST(IpAddress, Unspecified) {
  EXPECT_TRUE(IpAddress::Parse("0.0.0.0")->is_unspecified());
  EXPECT_TRUE(IpAddress::Parse("::")->is_unspecified());
  EXPECT_TRUE(IpAddress().is_unspecified());
  EXPECT_FALSE(IpAddress::Parse("127.0.0.1")->is_unspecified());
  EXPECT_FALSE(IpAddress::Parse("::1")->is_unspecified());
  EXPECT_FALSE(IpAddress::Parse("0.0.0.1")->is_unspecified());
}

TEST(IpAddress, RejectsGarbage) {
  EXPECT_FALSE(IpAddress::Parse(""));
  EXPECT_FALSE(IpAddress::Parse("198.18.0"));
  EXPECT_FALSE(IpAddress::Parse("198.18.0.256"));
  EXPECT_FALSE(IpAddress::Parse("hello"));
}

TEST(Cidr, ContainsAndNormalises) {
  auto c = Cidr::Parse("198.18.5.77/24");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->ToString(), "198.18.5.0/24");
  EXPECT_TRUE(c->Contains(*IpAddress::Parse("198.18.5.1")));
  EXPECT_FALSE(c->Contains(*IpAddress::Parse("198.18.6.1")));
  EXPECT_FALSE(c->Contains(*IpAddress::Parse("::1")));
  EXPECT_FALSE(Cidr::Parse("198.18.0.0/33"));
  EXPECT_FALSE(Cidr::Parse("198.18.0.0/"));
  EXPECT_TRUE(Cidr::Parse("0.0.0.0/0")->Contains(*IpAddress::Parse("1.2.3.4")));
}

TEST(SocketAddress, RoundTrips) {
  auto a = SocketAddress::Parse("198.18.0.1:8080");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->port, 8080);
  sockaddr_storage ss;
  a->ToSockaddr(&ss);
  EXPECT_EQ(SocketAddress::FromSockaddr(ss), *a);
  auto b = SocketAddress::Parse("[::1]:15001");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->ToString(), "[::1]:15001");
  EXPECT_FALSE(SocketAddress::Parse("198.18.0.1:65536"));
  EXPECT_FALSE(SocketAddress::Parse("198.18.0.1"));
}

}  // namespace
}  // namespace ringmesh
