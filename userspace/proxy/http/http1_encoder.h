// HTTP/1.1 serialisation: request and response heads, chunked body framing
// and the canned error responses the proxy answers with itself. The caller
// picks the framing explicitly; the encoder never guesses it from the
// fields, drops any Content-Length / Transfer-Encoding it is given (except
// where noted) and removes hop-by-hop fields, so a head parsed from one
// side cannot smuggle its framing to the other. Every name, value, method,
// target and reason is validated: nothing untrusted can inject a CRLF.
//
//   auto head = EncodeRequestHead("POST", "/x", headers, {Http1Framing::kChunked});
//   if (!head.ok()) ...;
//   AppendChunk(data, &out);
//   AppendLastChunk(trailers, &out);
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "userspace/proxy/http/headers.h"
#include "userspace/proxy/http/http1_parser.h"

namespace ringmesh::proxy::http {

struct Http1EncodeOptions {
  Http1Framing framing = Http1Framing::kNone;
  uint64_t content_length = 0;  // kContentLength
  // Forward a protocol switch (WebSocket): keeps Upgrade and writes
  // "connection: upgrade".
  bool upgrade = false;
  // Writes "connection: close" (the proxy ends the connection after this).
  bool connection_close = false;
};

// Requests: kNone writes no framing field, kContentLength "content-length",
// kChunked "transfer-encoding: chunked"; kUntilClose is invalid.
absl::StatusOr<std::string> EncodeRequestHead(std::string_view method, std::string_view target,
                                              const HeaderList& headers, const Http1EncodeOptions& options);

// Responses: as requests, plus kUntilClose (no framing field, and
// "connection: close"). With kNone a Content-Length from `headers` is kept
// (responses to HEAD and 304 describe the body they do not carry); 1xx and
// 204 never get one.
absl::StatusOr<std::string> EncodeResponseHead(int status, std::string_view reason, const HeaderList& headers,
                                               const Http1EncodeOptions& options);

// One chunk; empty data writes nothing (an empty chunk would end the body).
void AppendChunk(std::string_view data, std::string* out);
// The last chunk and the trailer section (validated; framing fields refused).
absl::Status AppendLastChunk(const HeaderList& trailers, std::string* out);

// The proxy's own short error answers: 400, 403, 413, 414, 431, 500, 501,
// 502, 503, 504, 505 (others become 500), each with a one-line text body
// and, unless `keep_alive`, "connection: close".
std::string CannedErrorResponse(int status, bool keep_alive = false);

// The standard reason phrase, "" when unknown.
std::string_view ReasonPhrase(int status);

}  // namespace ringmesh::proxy::http
