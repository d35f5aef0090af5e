// Untrusted bytes on their way into JSON: what counts as UTF-8, how bad
// bytes are shown, where previews cut, and that the status JSON of the
// agent can always be written.
#include "userspace/agent/utf8.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace ringmesh::agent {
namespace {

TEST(Utf8, Validity) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é € 😀
  EXPECT_FALSE(IsValidUtf8("caf\xE9"));                                   // Latin-1 é
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));                                  // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));                              // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));                              // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));                          // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));                                  // truncated
  EXPECT_FALSE(IsValidUtf8("\x80"));                                      // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xFF"));
}

TEST(Utf8, SanitizeShowsBadBytesAndKeepsGoodOnes) {
  EXPECT_EQ(SanitizeUtf8("R\xE9"
                         "essayez"),
            "R\\xE9essayez");
  EXPECT_EQ(SanitizeUtf8("\xC3\xA9\xE9\xC3"), "\xC3\xA9\\xE9\\xC3");
  EXPECT_EQ(SanitizeUtf8("\xE2\x82"
                         "A"),
            "\\xE2\\x82A");
  std::string good = "caf\xC3\xA9 \xF0\x9F\x98\x80";
  EXPECT_EQ(SanitizeUtf8(good), good);
  EXPECT_EQ(SanitizeUtf8(std::string("a\0b", 3)), std::string("a\0b", 3));  // JSON escapes NUL itself
}

TEST(Utf8, PreviewCutsOnCharacterBoundaries) {
  EXPECT_EQ(Utf8Preview("short", 200), "short");
  EXPECT_EQ(Utf8Preview("abcdef", 3), "abc...");
  // A 3-byte character straddling the cut is left out whole.
  EXPECT_EQ(Utf8Preview("ab\xE2\x82\xAC", 4), "ab...");
  EXPECT_EQ(Utf8Preview("ab\xE2\x82\xAC", 5), "ab\xE2\x82\xAC");
  // So is an escape.
  EXPECT_EQ(Utf8Preview("ab\xE9", 5), "ab...");
  EXPECT_EQ(Utf8Preview("ab\xE9", 6), "ab\\xE9");
  EXPECT_EQ(Utf8Preview("", 0), "");
  EXPECT_EQ(Utf8Preview("x", 0), "...");
}

TEST(Utf8, RandomBytesAlwaysComeOutValid) {
  std::mt19937 rng(11);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string s(rng() % 64, '\0');
    for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
    size_t max = rng() % 80;
    std::string preview = Utf8Preview(s, max);
    ASSERT_TRUE(IsValidUtf8(preview));
    ASSERT_LE(preview.size(), max + 3);
    ASSERT_TRUE(IsValidUtf8(SanitizeUtf8(s)));
    nlohmann::json doc;
    doc["s"] = SanitizeUtf8(s);
    ASSERT_NO_THROW((void)doc.dump());
  }
}

// The agent's status file: a source Health() carrying a Latin-1 error page
// made nlohmann throw from dump(), and the uncaught exception ended the
// agent. DumpJson writes it with U+FFFD instead.
TEST(Utf8, DumpJsonNeverThrows) {
  nlohmann::json status;
  status["source_health"] =
      "list Service: HTTP 503: <html>R\xE9"
      "essayez";
  status["last_error"] = "\xFF\xFE";
  EXPECT_THROW((void)status.dump(), nlohmann::json::type_error);
  std::string text;
  ASSERT_NO_THROW(text = DumpJson(status));
  EXPECT_TRUE(IsValidUtf8(text));
  auto back = nlohmann::json::parse(text);
  EXPECT_EQ(back["source_health"],
            "list Service: HTTP 503: <html>R\xEF\xBF\xBD"
            "essayez");
}

}  // namespace
}  // namespace ringmesh::agent
