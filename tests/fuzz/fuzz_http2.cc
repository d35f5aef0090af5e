// Fuzzes Http2Session in the server role with the bytes a client would send: the framing guard,
// nghttp2's frame and HPACK decoding, and our callbacks (header assembly, limits, flow control,
// responses with bodies and trailers, resets).
//
// Input: byte 0 is a control byte, the rest goes to Feed().
//   bit 0: prefix the client preface and an empty SETTINGS (so mutations reach frames quickly)
//   bit 1: small limits (tiny windows, header list, output and memory bounds)
//   bits 2-4: chunk size for Feed (1 << n bytes; 0 = all at once)
// Properties:
//   - no crash, no sanitizer report;
//   - produced-but-untaken output stays within max_output_buffer plus one header block;
//   - nghttp2's memory stays within max_session_memory (plus the GOAWAY written while failing);
//   - a close reason, once set, stays set; kAbuse comes with a counter.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "userspace/proxy/http/http2_session.h"

namespace {

using namespace ringmesh::proxy::http;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

// Answers every request with a small body, trailers on odd streams, and resets every fifth stream:
// the fuzzer's bytes then also drive the send side.
class Responder : public Http2Handler {
 public:
  Http2Session* session = nullptr;
  void OnHeaders(int32_t id, const Http2Headers& h, bool) override {
    if (h.status != 0 || ++count_ % 5 == 0) {
      (void)session->ResetStream(id, 8);
      return;
    }
    Http2Headers resp;
    resp.status = 200;
    resp.fields = {{"x-path", h.path.substr(0, 64)}};
    if (!session->SubmitResponse(id, resp, false).ok()) return;
    (void)session->SubmitData(id, std::string_view("hello"), id % 2 == 0);
    if (id % 2 == 1) (void)session->SubmitTrailers(id, Http2Headers{.fields = {{"x-t", "1"}}});
  }
  void OnData(int32_t id, absl::Span<const uint8_t> data) override { session->Consume(id, data.size()); }

 private:
  int count_ = 0;
};

uint64_t AbuseCount(const Http2Stats& s) {
  return s.rapid_reset + s.continuation_flood + s.hpack_bomb + s.settings_flood + s.ping_flood +
         s.empty_data_flood + s.too_many_streams + s.outbound_flood;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t control = data[0];
  std::string input;
  if (control & 1)
    input = std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + std::string("\0\0\0\4\0\0\0\0\0", 9);
  input.append(reinterpret_cast<const char*>(data + 1), size - 1);

  Http2Options options;
  if (control & 2) {
    options.initial_stream_window = 1;  // clamped to the minimum
    options.connection_window = 1;
    options.max_header_list_size = 1024;
    options.max_output_buffer = 1;  // raised to the minimum
    options.max_session_memory = 32 * 1024;
    options.max_concurrent_streams = 4;
    options.guard.ping_burst = 4;
    options.guard.settings_burst = 4;
  }
  options.clock = [] { return absl::UnixEpoch(); };
  Responder handler;
  Http2Session server(Http2Role::kServer, options, &handler);
  handler.session = &server;
  if (!server.Start().ok()) return 0;

  const size_t chunk = ((control >> 2) & 7) == 0 ? input.size() : size_t{1} << ((control >> 2) & 7);
  Http2CloseReason last = Http2CloseReason::kNone;
  // The largest thing serialized at once: one header block (nghttp2 caps what we send at our
  // max_header_list_size) or one frame.
  const size_t output_bound =
      std::max<size_t>(options.max_output_buffer, 16 * 1024) + options.max_header_list_size + 16 * 1024 + 64;
  for (size_t pos = 0; pos < input.size(); pos += chunk) {
    (void)server.Feed(std::string_view(input).substr(pos, chunk));
    auto out = server.PendingOutput();
    Check(out.size() <= output_bound, "output bounded");
    server.ConsumeOutput(out.size() / 2 + 1);  // a slowish reader
    Check(server.nghttp2_memory() <= options.max_session_memory + 64 * 1024, "nghttp2 memory bounded");
    Check(last == Http2CloseReason::kNone || server.close_reason() != Http2CloseReason::kNone,
          "close reason sticks");
    last = server.close_reason();
    if (last == Http2CloseReason::kAbuse) Check(AbuseCount(server.stats()) > 0, "abuse counted");
  }
  for (int i = 0; i < 1000 && !server.PendingOutput().empty(); ++i) server.ConsumeOutput(SIZE_MAX);
  return 0;
}
