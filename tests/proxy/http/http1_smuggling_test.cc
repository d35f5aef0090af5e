// Request smuggling table: every case either is rejected, or parses as
// exactly one well-framed request with the expected body length and
// nothing left over -- whole, and fed one byte at a time.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/proxy/http/http1_test_util.h"
#include "userspace/proxy/http/http1_parser.h"

namespace ringmesh::proxy::http {
namespace {

constexpr int kReject = -1;
constexpr int kIncomplete = -2;  // framed, waiting for more body

struct SmuggleCase {
  const char* name;
  std::string input;
  int body = kReject;  // expected body length, kReject or kIncomplete
  int status = 400;    // expected HTTP status when rejected
};

const std::string kHost = "Host: x\r\n";
std::string Post(const std::string& fields, const std::string& rest) {
  return "POST / HTTP/1.1\r\n" + kHost + fields + "\r\n" + rest;
}
const std::string kChunk5 = "5\r\nhello\r\n0\r\n\r\n";
const std::string kSmuggled = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n";

std::vector<SmuggleCase> Cases() {
  using std::string;
  return {
      // Controls: well-formed messages pass.
      {"control_cl", Post("Content-Length: 5\r\n", "hello"), 5},
      {"control_chunked", Post("Transfer-Encoding: chunked\r\n", kChunk5), 5},
      {"control_te_tab_ows", Post("Transfer-Encoding:\tchunked\r\n", kChunk5), 5},
      {"control_te_upper", Post("Transfer-Encoding: CHUNKED\r\n", kChunk5), 5},
      {"control_te_trailing_space", Post("Transfer-Encoding: chunked \r\n", kChunk5), 5},
      {"te_trailing_tab", Post("Transfer-Encoding: chunked\t\r\n", kChunk5)},  // llhttp: stricter than RFC
      {"control_cl_zero", Post("Content-Length: 0\r\n", ""), 0},
      {"control_chunk_ext", Post("Transfer-Encoding: chunked\r\n", "5;a=\"b\"\r\nhello\r\n0\r\n\r\n"), 5},
      // llhttp 8.1 rejects a second extension; rejecting is safe, extensions are unused.
      {"chunk_ext_two", Post("Transfer-Encoding: chunked\r\n", "5;a=b;c=d\r\nhello\r\n0\r\n\r\n")},
      {"control_no_body", "GET / HTTP/1.1\r\n" + kHost + "\r\n", 0},
      // CL.TE and TE.CL.
      {"cl_te", Post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nX")},
      {"te_cl", Post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n")},
      {"cl_te_smuggled_get",
       Post("Content-Length: 40\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + kSmuggled)},
      {"te_cl_identity", Post("Transfer-Encoding: identity\r\nContent-Length: 5\r\n", "hello")},
      {"cl_te_empty_te", Post("Content-Length: 5\r\nTransfer-Encoding:\r\n", "hello")},
      // TE.TE obfuscations.
      {"te_xchunked", Post("Transfer-Encoding: xchunked\r\n", kChunk5), kReject, 501},
      {"te_chunkedx", Post("Transfer-Encoding: chunkedx\r\n", kChunk5), kReject, 501},
      {"te_chunked_identity", Post("Transfer-Encoding: chunked, identity\r\n", kChunk5)},
      {"te_identity_chunked", Post("Transfer-Encoding: identity, chunked\r\n", kChunk5), kReject, 501},
      {"te_gzip_chunked", Post("Transfer-Encoding: gzip, chunked\r\n", kChunk5), kReject, 501},
      {"te_identity", Post("Transfer-Encoding: identity\r\n", "hello"), kReject, 501},
      {"te_gzip", Post("Transfer-Encoding: gzip\r\n", "hello"), kReject, 501},
      {"te_leading_space_name", Post(" Transfer-Encoding: chunked\r\n", kChunk5)},
      {"te_tab_before_name", Post("\tTransfer-Encoding: chunked\r\n", kChunk5)},
      {"te_space_before_colon", Post("Transfer-Encoding : chunked\r\n", kChunk5)},
      {"te_tab_before_colon", Post("Transfer-Encoding\t: chunked\r\n", kChunk5)},
      {"te_twice", Post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", kChunk5)},
      {"te_twice_identity", Post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", kChunk5)},
      {"te_quoted", Post("Transfer-Encoding: \"chunked\"\r\n", kChunk5), kReject, 501},
      {"te_obs_fold", Post("Transfer-Encoding:\r\n chunked\r\n", kChunk5)},
      {"te_obs_fold_tab", Post("X: a\r\n\tTransfer-Encoding: chunked\r\n", kChunk5)},
      {"te_vertical_tab", Post("Transfer-Encoding:\x0b"
                               "chunked\r\n",
                               kChunk5)},
      {"te_form_feed", Post("Transfer-Encoding:\x0c"
                            "chunked\r\n",
                            kChunk5)},
      {"te_nul", Post(string("Transfer-Encoding: chunked\0\r\n", 29), kChunk5)},
      {"te_name_underscore", Post("Transfer_Encoding: chunked\r\n", ""), 0},  // a different field: no body
      {"te_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + kChunk5},
      // Content-Length variants.
      {"cl_plus", Post("Content-Length: +5\r\n", "hello")},
      {"cl_minus", Post("Content-Length: -5\r\n", "hello")},
      {"cl_list", Post("Content-Length: 5, 6\r\n", "hello!")},
      {"cl_list_same", Post("Content-Length: 5, 5\r\n", "hello")},
      {"cl_dup_differs", Post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")},
      {"cl_dup_same", Post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello")},
      {"cl_hex", Post("Content-Length: 0x5\r\n", "hello")},
      {"cl_space_inside", Post("Content-Length: 1 2\r\n", "hello")},
      {"cl_overflow", Post("Content-Length: 99999999999999999999\r\n", "hello")},
      {"cl_empty", Post("Content-Length:\r\n", "hello")},
      {"cl_space_before_colon", Post("Content-Length : 5\r\n", "hello")},
      {"cl_obs_fold", Post("Content-Length:\r\n 5\r\n", "hello")},
      {"cl_leading_zeros", Post("Content-Length: 005\r\n", "hello"), 5},
      // Line endings and control characters.
      {"lf_request_line", "POST / HTTP/1.1\n" + kHost + "Content-Length: 5\r\n\r\nhello"},
      {"lf_header_line", Post("Content-Length: 5\n", "hello")},
      {"lf_empty_line", "POST / HTTP/1.1\r\n" + kHost + "Content-Length: 5\r\n\nhello"},
      {"lf_everywhere", "POST / HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello"},
      {"cr_bare_header", Post("X: a\rContent-Length: 5\r\n", "hello")},
      {"cr_bare_line", "POST / HTTP/1.1\r\n" + kHost + "\rContent-Length: 5\r\n\r\nhello"},
      {"nul_in_value", Post(string("X: a\0b\r\n", 8), "")},
      {"nul_in_name", Post(string("X\0Y: a\r\n", 8), "")},
      {"ctl_in_value", Post("X: a\x01"
                            "b\r\n",
                            "")},
      {"del_in_value", Post("X: a\x7f"
                            "b\r\n",
                            "")},
      {"empty_name", Post(": a\r\n", "")},
      {"space_in_name", Post("X Y: a\r\n", "")},
      {"nl_in_target", "GET /a\nb HTTP/1.1\r\n" + kHost + "\r\n"},
      {"space_in_target", "GET /a b HTTP/1.1\r\n" + kHost + "\r\n"},
      // Chunk framing.
      {"chunk_overflow", Post("Transfer-Encoding: chunked\r\n", "ffffffffffffffffff\r\nabc\r\n0\r\n\r\n")},
      // The largest chunk size is valid; it only means "more to come".
      {"chunk_size_max", Post("Transfer-Encoding: chunked\r\n", "ffffffffffffffff\r\nabc"), kIncomplete},
      {"chunk_negative", Post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n")},
      {"chunk_size_0x", Post("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n")},
      {"chunk_size_space", Post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n")},
      {"chunk_size_leading_space", Post("Transfer-Encoding: chunked\r\n", " 5\r\nhello\r\n0\r\n\r\n")},
      {"chunk_size_lf", Post("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n")},
      {"chunk_data_lf", Post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n")},
      {"chunk_data_too_long", Post("Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n")},
      {"chunk_last_lf", Post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\n")},
      {"chunk_ext_ctl", Post("Transfer-Encoding: chunked\r\n", "5;a\x01\r\nhello\r\n0\r\n\r\n")},
      {"chunk_ext_lf", Post("Transfer-Encoding: chunked\r\n", "5;a=b\nhello\r\n0\r\n\r\n")},
      {"chunk_ext_quoted_crlf",
       Post("Transfer-Encoding: chunked\r\n", "5;a=\"b\r\nc\"\r\nhello\r\n0\r\n\r\n")},
      {"chunk_ext_too_long",
       Post("Transfer-Encoding: chunked\r\n", "5;" + string(2000, 'a') + "\r\nhello\r\n0\r\n\r\n")},
      {"chunk_ext_bare_semicolon", Post("Transfer-Encoding: chunked\r\n", "5;\r\nhello\r\n0\r\n\r\n")},
      {"trailer_content_length",
       Post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nContent-Length: 9\r\n\r\n")},
      {"trailer_obs_fold", Post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n")},
      {"trailer_lf", Post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX: a\n\r\n")},
      // Request line, version, Host.
      {"version_2", "GET / HTTP/2.0\r\n" + kHost + "\r\n", kReject, 505},
      {"version_1_2", "GET / HTTP/1.2\r\n" + kHost + "\r\n"},
      {"version_garbage", "GET / HTTP/x.y\r\n" + kHost + "\r\n"},
      {"no_host", "GET / HTTP/1.1\r\n\r\n"},
      {"two_hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
      {"unknown_method", "SMUGGLE / HTTP/1.1\r\n" + kHost + "\r\n"},
      {"lowercase_method", "get / HTTP/1.1\r\n" + kHost + "\r\n"},
      // Bytes after a last message never become a request.
      {"close_then_request",
       "POST / HTTP/1.1\r\n" + kHost + "Connection: close\r\nContent-Length: 1\r\n\r\na" + kSmuggled, 1},
      {"http10_then_request", "POST / HTTP/1.0\r\nContent-Length: 1\r\n\r\na" + kSmuggled, 1},
  };
}

// One line per failing case, saying what happened instead.
void CheckOutcome(const SmuggleCase& c, const h1test::RunResult& r, const char* how) {
  bool ok;
  if (c.body == kReject) {
    ok = r.status == Http1FeedStatus::kError && r.completed == 0 && r.error.HttpStatus() == c.status;
  } else if (c.body == kIncomplete) {
    ok = r.status == Http1FeedStatus::kOk && r.completed == 0 && r.consumed == c.input.size();
  } else if (r.status == Http1FeedStatus::kClosed) {
    // The last message of the connection: what follows is never parsed.
    ok = r.completed == 1 && r.body_bytes == static_cast<size_t>(c.body) &&
         c.input.substr(r.consumed) == kSmuggled;
  } else {
    ok = r.status == Http1FeedStatus::kOk && r.completed == 1 &&
         r.body_bytes == static_cast<size_t>(c.body) && r.consumed == c.input.size();
  }
  EXPECT_TRUE(ok) << c.name << " (" << how << "): want " << (c.body == kReject ? "reject " : "body ")
                  << (c.body == kReject ? c.status : c.body) << "; got status " << static_cast<int>(r.status)
                  << " completed " << r.completed << " body " << r.body_bytes << " http "
                  << r.error.HttpStatus() << " consumed " << r.consumed << "/" << c.input.size() << " ["
                  << r.error.detail << "]";
}

TEST(Http1Smuggling, EachCaseRejectsOrFramesExactlyOneRequest) {
  const std::vector<SmuggleCase> cases = Cases();
  ASSERT_GE(cases.size(), 60u);
  int rejected = 0;
  for (const SmuggleCase& c : cases) {
    SCOPED_TRACE(c.name);
    CheckOutcome(c, h1test::RunWhole(c.input), "whole");
    std::vector<size_t> every;
    for (size_t i = 1; i < c.input.size(); ++i) every.push_back(i);
    CheckOutcome(c, h1test::RunPieces(c.input, every), "byte by byte");
    if (c.body == kReject) ++rejected;
  }
  EXPECT_GE(rejected, 60);
}

}  // namespace
}  // namespace ringmesh::proxy::http
