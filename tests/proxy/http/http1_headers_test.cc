// HeaderList, the RFC 9110 field syntax checks and hop-by-hop removal.
#include <gtest/gtest.h>

#include <string>

#include "userspace/proxy/http/headers.h"

namespace ringmesh::proxy::http {
namespace {

TEST(HeaderList, CaseInsensitiveOrderedAndCounted) {
  HeaderList h;
  h.Add("Host", "a");
  h.Add("X-Multi", "1");
  h.Add("x-multi", "2");
  EXPECT_EQ(h.size(), 3u);
  EXPECT_EQ(h.bytes(), 4u + 1 + 7 + 1 + 7 + 1);
  EXPECT_EQ(h.Get("HOST"), "a");
  EXPECT_EQ(h.Count("X-MULTI"), 2u);
  EXPECT_EQ(h.GetAll("x-multi"), (std::vector<std::string_view>{"1", "2"}));
  EXPECT_FALSE(h.Get("missing").has_value());
  EXPECT_EQ(h.Remove("X-Multi"), 2u);
  EXPECT_EQ(h.bytes(), 5u);
  h.Set("host", "bb");
  EXPECT_EQ(h.size(), 1u);
  EXPECT_EQ(h.Get("Host"), "bb");
  EXPECT_EQ(h.bytes(), 6u);
  h.Clear();
  EXPECT_TRUE(h.empty());
  EXPECT_EQ(h.bytes(), 0u);
}

TEST(HeaderSyntax, Tokens) {
  EXPECT_TRUE(IsValidHeaderName("X-Custom_1.2~!#$%&'*+^`|"));
  for (const char* bad : {"", "a b", "a:b", "a\tb", "a\"b", "a(b)", "a/b", "a@b", "a{b", "\x80"}) {
    EXPECT_FALSE(IsValidHeaderName(bad)) << bad;
  }
  EXPECT_FALSE(IsValidHeaderName(std::string("a\0b", 3)));
}

TEST(HeaderSyntax, Values) {
  EXPECT_TRUE(IsValidHeaderValue(""));
  EXPECT_TRUE(IsValidHeaderValue("a b\tc \"quoted\" \x80\xff"));
  for (const char* bad : {" lead", "trail ", "\tx", "a\rb", "a\nb", "a\x01", "a\x7f", "a\x1f"}) {
    EXPECT_FALSE(IsValidHeaderValue(bad)) << bad;
  }
  EXPECT_FALSE(IsValidHeaderValue(std::string("a\0b", 3)));
  EXPECT_EQ(TrimOws(" \t a b \t"), "a b");
}

TEST(HeaderSyntax, ListElements) {
  std::vector<std::string> got;
  ForEachListElement(" a , b,,\tc ,", [&](std::string_view e) { got.emplace_back(e); });
  EXPECT_EQ(got, (std::vector<std::string>{"a", "b", "c"}));
}

HeaderList HopByHopSample() {
  HeaderList h;
  h.Add("Host", "x");
  h.Add("Connection", "keep-alive, X-Secret, host, Upgrade");
  h.Add("connection", "te");
  h.Add("Keep-Alive", "timeout=5");
  h.Add("Proxy-Connection", "keep-alive");
  h.Add("X-Secret", "1");
  h.Add("TE", "trailers, deflate");
  h.Add("Transfer-Encoding", "chunked");
  h.Add("Upgrade", "websocket");
  h.Add("Proxy-Authorization", "Basic eA==");
  h.Add("Content-Length", "5");
  h.Add("Accept", "*/*");
  return h;
}

TEST(HopByHop, RemovesConnectionAndWhatItNames) {
  HeaderList h = HopByHopSample();
  RemoveHopByHopHeaders(h);
  HeaderList want;
  want.Add("Host", "x");  // listed in Connection, but never stripped
  want.Add("Proxy-Authorization", "Basic eA==");
  want.Add("Content-Length", "5");
  want.Add("Accept", "*/*");
  EXPECT_EQ(h, want);
}

TEST(HopByHop, KeepsUpgradeAndTeTrailersWhenAsked) {
  HeaderList h = HopByHopSample();
  RemoveHopByHopHeaders(h, {.keep_upgrade = true, .keep_te_trailers = true});
  EXPECT_EQ(h.Get("upgrade"), "websocket");
  EXPECT_EQ(h.GetAll("te"), (std::vector<std::string_view>{"trailers"}));
  EXPECT_FALSE(h.Has("connection"));
  EXPECT_FALSE(h.Has("x-secret"));
  EXPECT_FALSE(h.Has("transfer-encoding"));

  HeaderList no_trailers;
  no_trailers.Add("TE", "gzip");
  RemoveHopByHopHeaders(no_trailers, {.keep_te_trailers = true});
  EXPECT_TRUE(no_trailers.empty());
}

}  // namespace
}  // namespace ringmesh::proxy::http
