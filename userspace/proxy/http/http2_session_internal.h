// Private to the HTTP/2 session's .cc files: per-stream state and header-list building.
#pragma once

#include <nghttp2/nghttp2.h>

#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "userspace/proxy/http/http2_session.h"

namespace ringmesh::proxy::http {

struct Http2Session::Stream {
  int32_t id = 0;
  // Inbound head being assembled.
  Http2Headers head;
  size_t head_bytes = 0;
  bool head_too_large = false;
  bool final_head_seen = false;  // a later header block is trailers
  bool rejected = false;         // answered 431 by the session; the handler never saw it
  bool reset_notified = false;   // handler already told (OnStreamReset / ResetStream call)
  // Outbound body.
  bool has_provider = false;  // head went out without END_STREAM; body comes from `send`
  bool head_submitted = false;
  // RST_STREAM(NO_ERROR) once our END_STREAM frame is out, if the peer is still sending.
  bool reset_after_end = false;
  std::string send;
  size_t send_pos = 0;
  bool end_queued = false;
  bool deferred = false;
  bool want_writable = false;
  bool trailers_pending = false;
  Http2Headers trailers;

  size_t queued() const { return send.size() - send_pos; }
};

namespace http2_internal {

// RFC 9113 8.2.2: connection-specific fields must not travel in HTTP/2; a proxy translating from
// HTTP/1 drops them instead of getting its stream reset.
inline bool IsConnectionSpecific(std::string_view name, std::string_view value) {
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
         name == "transfer-encoding" || name == "upgrade" || (name == "te" && value != "trailers");
}

inline nghttp2_nv Nv(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                    NGHTTP2_NV_FLAG_NONE};
}

// Keeps the strings that the nghttp2_nv array points into alive until the submit call returns (a
// deque: growing it does not move them).
struct NvList {
  std::deque<std::string> owned;
  std::vector<nghttp2_nv> nva;
  void Build(const Http2Headers& h, bool pseudo) {
    if (pseudo) {
      if (h.status != 0) {
        owned.push_back(std::to_string(h.status));
        nva.push_back(Nv(":status", owned.back()));
      }
      if (!h.method.empty()) nva.push_back(Nv(":method", h.method));
      if (!h.scheme.empty()) nva.push_back(Nv(":scheme", h.scheme));
      if (!h.authority.empty()) nva.push_back(Nv(":authority", h.authority));
      if (!h.path.empty()) nva.push_back(Nv(":path", h.path));
    }
    for (const auto& [name, value] : h.fields) {
      if (name.empty() || name[0] == ':') continue;
      owned.push_back(absl::AsciiStrToLower(name));
      if (IsConnectionSpecific(owned.back(), value)) {
        owned.pop_back();
        continue;
      }
      nva.push_back(Nv(owned.back(), value));
    }
  }
};

}  // namespace http2_internal
}  // namespace ringmesh::proxy::http
