// Fuzzes the proxy admin API's HTTP request parser (HttpRequestParser, on
// llhttp), the first thing that sees an admin client's bytes. The routing
// (HandleAdminRequest) is not fuzzed: it needs a live ProxyCore with worker
// threads, and it only compares the parsed method and path.
//
// Properties:
//   - no crash, and llhttp never reads outside the chunk it is given;
//   - incremental parsing is invisible: the input fed in one piece, one byte
//     at a time, and in a few pseudo-random splits (derived from the input,
//     so a crash reproduces) ends the same way — the same complete request,
//     the same "need more bytes", or the same error;
//   - once Feed reported complete or an error it keeps reporting it;
//   - a complete request has a method, a path without '?', and a URL within
//     the parser's 2048-byte bound;
//   - a GET/HEAD/POST/DELETE request written back as a minimal request line
//     parses to the same method, path and query.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "userspace/proxy/admin.h"

namespace {

using ringmesh::proxy::HttpRequest;
using ringmesh::proxy::HttpRequestParser;

void Check(bool ok, const char* what, std::string_view detail = {}) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n%.*s\n", what, static_cast<int>(detail.size()),
                 detail.data());
    std::abort();
  }
}

// How one parse ended.
struct Outcome {
  enum Kind { kIncomplete, kComplete, kError } kind = kIncomplete;
  HttpRequest request;  // kComplete
  std::string error;    // kError

  // Error texts may differ: fed in pieces, the URL length bound (checked per
  // span in our callback) can trip before llhttp reaches a bad character
  // that it sees first when fed whole. Rejected is rejected either way.
  bool operator==(const Outcome& o) const {
    return kind == o.kind && request.method == o.request.method && request.path == o.request.path &&
           request.query == o.request.query;
  }
  std::string Describe() const {
    switch (kind) {
      case kIncomplete:
        return "incomplete";
      case kError:
        return "error: " + error;
      case kComplete:
        return "complete: " + request.method + " " + request.path + " ? " + request.query;
    }
    return "";
  }
};

// Feeds `in` in the chunks `sizes` describes (the last chunk takes the rest).
// Each chunk is a fresh heap copy so that ASan catches a read past its end.
Outcome Parse(std::string_view in, const std::vector<size_t>& sizes) {
  HttpRequestParser parser;
  Outcome out;
  size_t off = 0;
  for (size_t i = 0; off < in.size() || i == 0; ++i) {
    size_t n = i < sizes.size() ? std::min(sizes[i], in.size() - off) : in.size() - off;
    // new char[0] is a valid, non-null pointer (llhttp does pointer
    // arithmetic on it even for an empty buffer).
    std::unique_ptr<char[]> chunk(new char[n]);
    std::memcpy(chunk.get(), in.data() + off, n);
    auto r = parser.Feed(chunk.get(), n);
    off += n;
    if (!r.ok()) {
      out.kind = Outcome::kError;
      out.error = std::string(r.status().message());
      // Errors are sticky: more bytes do not revive the parser.
      auto again = parser.Feed("GET / HTTP/1.1\r\n\r\n", 18);
      Check(!again.ok() && again.status() == r.status(), "error not sticky", out.error);
      return out;
    }
    if (*r) {
      out.kind = Outcome::kComplete;
      out.request = parser.request();
      auto again = parser.Feed("x", 1);
      Check(again.ok() && *again, "complete not sticky");
      Check(parser.request().path == out.request.path, "request changed after completion");
      return out;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const Outcome whole = Parse(in, {});

  if (whole.kind == Outcome::kComplete) {
    const HttpRequest& r = whole.request;
    Check(!r.method.empty(), "complete request without a method");
    Check(r.path.find('?') == std::string::npos, "path contains '?'", r.path);
    Check(r.path.size() + r.query.size() <= 2048, "URL longer than the parser's bound");
  }

  // The same bytes in pieces.
  std::vector<std::vector<size_t>> splits;
  if (size <= 4096) splits.push_back(std::vector<size_t>(size, 1));
  std::mt19937_64 rng(std::hash<std::string_view>{}(in));
  for (int k = 0; k < 4 && size > 1; ++k) {
    std::vector<size_t> sizes;
    std::uniform_int_distribution<size_t> len(1, k == 0 ? 3 : size);
    for (size_t off = 0; off < size;) {
      sizes.push_back(len(rng));
      off += sizes.back();
    }
    splits.push_back(std::move(sizes));
  }
  for (const auto& sizes : splits) {
    Outcome split = Parse(in, sizes);
    Check(split == whole, "split parse differs from whole parse",
          "whole: " + whole.Describe() + "\nsplit: " + split.Describe());
  }

  // Written back minimally, a complete request parses to itself.
  if (whole.kind == Outcome::kComplete) {
    const HttpRequest& r = whole.request;
    if (r.method == "GET" || r.method == "HEAD" || r.method == "POST" || r.method == "DELETE") {
      std::string again = r.method + " " + r.path + (r.query.empty() ? "" : "?" + r.query) +
                          " HTTP/1.1\r\nHost: localhost\r\n\r\n";
      Outcome back = Parse(again, {});
      Check(back == whole, "re-serialised request parses differently",
            "first: " + whole.Describe() + "\nagain: " + back.Describe());
    }
  }
  return 0;
}
