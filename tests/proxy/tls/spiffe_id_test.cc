#include "userspace/proxy/tls/spiffe_id.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/container/flat_hash_set.h"

namespace ringmesh::proxy::tls {
namespace {

struct Valid {
  std::string uri, td, ns, sa;
};

TEST(SpiffeId, ParsesValidIds) {
  const std::string long_sa = std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') +
                              "." + std::string(61, 'd');  // 253 bytes
  const Valid cases[] = {
      {"spiffe://cluster.local/ns/default/sa/default", "cluster.local", "default", "default"},
      {"spiffe://td/ns/a/sa/b", "td", "a", "b"},
      {"spiffe://my-mesh_1.example.com/ns/kube-system/sa/coredns", "my-mesh_1.example.com", "kube-system",
       "coredns"},
      {"spiffe://cluster.local/ns/x1/sa/build.bot-2", "cluster.local", "x1", "build.bot-2"},
      {"spiffe://cluster.local/ns/" + std::string(63, 'n') + "/sa/" + long_sa, "cluster.local",
       std::string(63, 'n'), long_sa},
      {"spiffe://0/ns/9/sa/8", "0", "9", "8"},
  };
  for (const Valid& c : cases) {
    auto id = SpiffeId::Parse(c.uri);
    ASSERT_TRUE(id.ok()) << c.uri << ": " << id.status();
    EXPECT_EQ(id->trust_domain, c.td);
    EXPECT_EQ(id->ns, c.ns);
    EXPECT_EQ(id->service_account, c.sa);
    EXPECT_EQ(id->ToString(), c.uri);
  }
}

TEST(SpiffeId, RejectsInvalidIds) {
  const std::string cases[] = {
      "",
      "spiffe://",
      "spiffe:///ns/a/sa/b",                               // empty trust domain
      "SPIFFE://td/ns/a/sa/b",                             // scheme is lowercase
      "https://td/ns/a/sa/b",                              // other scheme
      "spiffe:/td/ns/a/sa/b",                              // missing slash
      "spiffe://td",                                       // no path
      "spiffe://td/",                                      // empty path
      "spiffe://td/ns/a",                                  // no service account
      "spiffe://td/ns/a/sa/",                              // empty service account
      "spiffe://td/ns//sa/b",                              // empty namespace
      "spiffe://td/ns/a/sa/b/",                            // trailing slash
      "spiffe://td/ns/a/sa/b/extra",                       // extra segment
      "spiffe://td/sa/b/ns/a",                             // segments swapped
      "spiffe://td/NS/a/sa/b",                             // keyword case
      "spiffe://Cluster.local/ns/a/sa/b",                  // uppercase trust domain
      "spiffe://td:443/ns/a/sa/b",                         // port
      "spiffe://user@td/ns/a/sa/b",                        // userinfo
      "spiffe://td/ns/a/sa/b?x=1",                         // query
      "spiffe://td/ns/a/sa/b#frag",                        // fragment
      "spiffe://td/ns/a%2Fb/sa/b",                         // percent-encoding
      "spiffe://td/ns/Default/sa/b",                       // uppercase namespace
      "spiffe://td/ns/-a/sa/b",                            // namespace starts with '-'
      "spiffe://td/ns/a-/sa/b",                            // namespace ends with '-'
      "spiffe://td/ns/a.b/sa/b",                           // dot in a namespace (a DNS label)
      "spiffe://td/ns/a/sa/b..c",                          // empty label in service account
      "spiffe://td/ns/a/sa/.b",                            // service account starts with '.'
      "spiffe://td/ns/a/sa/b_c",                           // underscore in service account
      "spiffe://.td/ns/a/sa/b",                            // trust domain starts with '.'
      "spiffe://t..d/ns/a/sa/b",                           // empty trust domain label
      "spiffe://td/ns/a/sa/b c",                           // space
      std::string("spiffe://td/ns/a/sa/b\0c", 24),         // NUL byte
      "spiffe://td/ns/" + std::string(64, 'n') + "/sa/b",  // namespace > 63
      "spiffe://td/ns/a/sa/" + std::string(254, 's'),      // service account > 253
      "spiffe://td/ns/a/sa/" + std::string(64, 's'),       // a service account label > 63
      "spiffe://" + std::string(256, 't') + "/ns/a/sa/b",  // trust domain > 255
      " spiffe://td/ns/a/sa/b",                            // leading space
  };
  for (const std::string& c : cases) {
    EXPECT_FALSE(SpiffeId::Parse(c).ok()) << "accepted: " << c;
  }
}

TEST(SpiffeId, EqualityAndHash) {
  auto a = SpiffeId::Parse("spiffe://td/ns/a/sa/b");
  auto b = SpiffeId::Parse("spiffe://td/ns/a/sa/b");
  auto c = SpiffeId::Parse("spiffe://td/ns/a/sa/c");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
  // ns and sa do not blur into each other.
  EXPECT_NE((SpiffeId{"td", "ab", "c"}), (SpiffeId{"td", "a", "bc"}));
  absl::flat_hash_set<SpiffeId> set = {*a, *b, *c};
  EXPECT_EQ(set.size(), 2u);
}

TEST(SpiffeId, ValidateChecksFieldsAlone) {
  EXPECT_TRUE(SpiffeId::Validate("td", "ns", "sa").ok());
  EXPECT_FALSE(SpiffeId::Validate("td", "ns/x", "sa").ok());
  EXPECT_FALSE(SpiffeId::Validate("td", "ns", "").ok());
  EXPECT_FALSE(SpiffeId::Validate("TD", "ns", "sa").ok());
}

}  // namespace
}  // namespace ringmesh::proxy::tls
