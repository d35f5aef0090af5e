// HBONE CONNECT heads: ztunnel's wire details when building, strict checks
// when parsing.
#include "userspace/proxy/hbone/hbone_request.h"

#include <gtest/gtest.h>

#include <set>

namespace ringmesh::proxy::hbone {
namespace {

std::string Field(const http::Http2Headers& h, const std::string& name) {
  std::string out;
  int n = 0;
  for (const auto& [k, v] : h.fields) {
    if (k == name) out = v, ++n;
  }
  EXPECT_LE(n, 1) << name;
  return out;
}

TEST(HboneRequest, AuthorityAcceptsIpPortAndBracketedV6) {
  auto v4 = ParseConnectAuthority("10.0.0.1:8080");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->ToString(), "10.0.0.1:8080");
  auto v6 = ParseConnectAuthority("[2001:db8::1]:15008");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->port, 15008);
  EXPECT_EQ(FormatConnectAuthority(*v6), "[2001:db8::1]:15008");
  EXPECT_EQ(FormatConnectAuthority(*v4), "10.0.0.1:8080");
}

TEST(HboneRequest, AuthorityRejectsEverythingElse) {
  for (const char* bad : {"",
                          "10.0.0.1",
                          "10.0.0.1:",
                          "10.0.0.1:0",
                          "10.0.0.1:65536",
                          "10.0.0.1:080",
                          "10.0.0.1:+80",
                          "10.0.0.1:8a",
                          "2001:db8::1:80",
                          "[10.0.0.1]:80",
                          "[2001:db8::1]",
                          "[2001:db8::1]80",
                          "[2001:db8::1:80",
                          "example.com:80",
                          "0.0.0.0:80",
                          "[::]:80",
                          "10.0.0.1:80/path",
                          " 10.0.0.1:80",
                          "10.0.0.1 :80",
                          "[fe80::1%eth0]:80",
                          "10.0.0.1:8080:1",
                          "user@10.0.0.1:80"}) {
    EXPECT_FALSE(ParseConnectAuthority(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseConnectAuthority(std::string(100, '1')).ok());
}

TEST(HboneRequest, BuildsZtunnelsConnect) {
  HboneConnectOptions o;
  o.source_ip = IpAddress::Parse("2001:db8::7");
  o.baggage = {{"k8s.namespace.name", "default"}, {"k8s.pod.name", "web-0"}, {"bad key", "x"}, {"v", "a,b"}};
  o.extra_headers = {{"X-Extra", "1"}, {":path", "/"}, {"Forwarded", "for=1.2.3.4"}};
  auto h = BuildConnectRequest(*SocketAddress::Parse("[2001:db8::1]:80"), o);
  EXPECT_EQ(h.method, "CONNECT");
  EXPECT_EQ(h.authority, "[2001:db8::1]:80");
  EXPECT_TRUE(h.scheme.empty());
  EXPECT_TRUE(h.path.empty());
  EXPECT_EQ(Field(h, "forwarded"), "for=\"[2001:db8::7]\"");
  EXPECT_EQ(Field(h, "baggage"), "k8s.namespace.name=default,k8s.pod.name=web-0");
  EXPECT_TRUE(IsValidTraceparent(Field(h, "traceparent")));
  EXPECT_EQ(Field(h, "x-extra"), "1");
}

TEST(HboneRequest, TraceparentIsKeptWhenValidAndMadeFreshOtherwise) {
  const std::string given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  HboneConnectOptions o;
  o.traceparent = given;
  auto target = *SocketAddress::Parse("10.0.0.1:80");
  EXPECT_EQ(Field(BuildConnectRequest(target, o), "traceparent"), given);
  o.traceparent = "garbage";
  std::string made = Field(BuildConnectRequest(target, o), "traceparent");
  EXPECT_TRUE(IsValidTraceparent(made));
  EXPECT_NE(made, Field(BuildConnectRequest(target, o), "traceparent"));  // random ids
  // No forwarded/baggage unless asked.
  auto plain = BuildConnectRequest(target, {});
  EXPECT_EQ(Field(plain, "forwarded"), "");
  EXPECT_EQ(Field(plain, "baggage"), "");
  for (const char* bad : {"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                          "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                          "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                          "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}) {
    EXPECT_FALSE(IsValidTraceparent(bad)) << bad;
  }
}

TEST(HboneRequest, ForwardedFor) {
  EXPECT_EQ(FormatForwardedFor(*IpAddress::Parse("10.1.2.3")), "for=10.1.2.3");
  EXPECT_EQ(ParseForwardedFor("for=10.1.2.3")->ToString(), "10.1.2.3");
  EXPECT_EQ(ParseForwardedFor("For=\"10.1.2.3:4711\";proto=https")->ToString(), "10.1.2.3");
  EXPECT_EQ(ParseForwardedFor("proto=https; for=\"[2001:db8::1]:80\", for=1.1.1.1")->ToString(),
            "2001:db8::1");
  EXPECT_FALSE(ParseForwardedFor("for=unknown").has_value());
  EXPECT_FALSE(ParseForwardedFor("for=_hidden").has_value());
  EXPECT_FALSE(ParseForwardedFor("for=2001:db8::1").has_value());  // must be bracketed and quoted
  EXPECT_FALSE(ParseForwardedFor("by=10.0.0.1").has_value());
  EXPECT_FALSE(ParseForwardedFor("for=\"[2001:db8::1\"").has_value());
  // Round trip.
  for (const char* ip : {"10.0.0.9", "2001:db8::9"}) {
    EXPECT_EQ(ParseForwardedFor(FormatForwardedFor(*IpAddress::Parse(ip)))->ToString(), ip);
  }
}

TEST(HboneRequest, ParseConnectRequestAcceptsOnlyHboneConnect) {
  http::Http2Headers h;
  h.method = "CONNECT";
  h.authority = "10.0.0.1:8080";
  h.fields = {{"forwarded", "for=10.0.0.2"},
              {"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}};
  auto r = ParseConnectRequest(h);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->target.ToString(), "10.0.0.1:8080");
  EXPECT_EQ(r->forwarded_for->ToString(), "10.0.0.2");
  EXPECT_EQ(r->traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  EXPECT_EQ(r->headers.size(), 2u);

  auto get = h;
  get.method = "GET";
  EXPECT_FALSE(ParseConnectRequest(get).ok());
  auto extended = h;
  extended.scheme = "https";
  extended.path = "/";
  EXPECT_FALSE(ParseConnectRequest(extended).ok());
  auto bad = h;
  bad.authority = "web.default.svc:80";
  EXPECT_FALSE(ParseConnectRequest(bad).ok());
  auto none = h;
  none.authority.clear();
  EXPECT_FALSE(ParseConnectRequest(none).ok());
}

}  // namespace
}  // namespace ringmesh::proxy::hbone
