#include "userspace/proxy/http/http1_encoder.h"

#include <algorithm>
#include <cstdio>

namespace ringmesh::proxy::http {
namespace {

// request-target: printable ASCII without SP (RFC 9112 §3.2); the parser
// on the other side must see exactly the target we saw.
bool IsValidTarget(std::string_view t) {
  return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// reason-phrase = *( HTAB / SP / VCHAR / obs-text ).
bool IsValidReason(std::string_view r) {
  return std::all_of(r.begin(), r.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f);
  });
}

bool IsFramingField(std::string_view name) {
  return EqualsIgnoreCase(name, "content-length") || EqualsIgnoreCase(name, "transfer-encoding");
}

absl::Status AppendFields(const HeaderList& headers, bool keep_content_length, std::string* out) {
  for (const Header& h : headers) {
    if (!IsValidHeaderName(h.name)) return absl::InvalidArgumentError("invalid header name");
    if (!IsValidHeaderValue(h.value)) return absl::InvalidArgumentError("invalid header value");
    if (IsFramingField(h.name) && !(keep_content_length && EqualsIgnoreCase(h.name, "content-length"))) {
      continue;
    }
    out->append(h.name).append(": ").append(h.value).append("\r\n");
  }
  return absl::OkStatus();
}

// Fields after the start line: the caller's (hop-by-hop removed), then
// Connection and framing as chosen.
absl::Status AppendHeadFields(const HeaderList& headers, const Http1EncodeOptions& options,
                              bool keep_content_length, std::string* out) {
  HeaderList fields = headers;
  RemoveHopByHopHeaders(fields, {.keep_upgrade = options.upgrade});
  if (absl::Status s = AppendFields(fields, keep_content_length, out); !s.ok()) return s;
  if (options.upgrade && fields.Has("upgrade")) {
    out->append("connection: upgrade\r\n");
  } else if (options.connection_close || options.framing == Http1Framing::kUntilClose) {
    out->append("connection: close\r\n");
  }
  switch (options.framing) {
    case Http1Framing::kContentLength:
      out->append("content-length: ").append(std::to_string(options.content_length)).append("\r\n");
      break;
    case Http1Framing::kChunked:
      out->append("transfer-encoding: chunked\r\n");
      break;
    case Http1Framing::kNone:
    case Http1Framing::kUntilClose:
      break;
  }
  out->append("\r\n");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> EncodeRequestHead(std::string_view method, std::string_view target,
                                              const HeaderList& headers, const Http1EncodeOptions& options) {
  if (!IsToken(method)) return absl::InvalidArgumentError("invalid method");
  if (!IsValidTarget(target)) return absl::InvalidArgumentError("invalid request target");
  if (options.framing == Http1Framing::kUntilClose) {
    return absl::InvalidArgumentError("a request body cannot be delimited by the connection's end");
  }
  std::string out;
  out.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
  if (absl::Status s = AppendHeadFields(headers, options, /*keep_content_length=*/false, &out); !s.ok())
    return s;
  return out;
}

absl::StatusOr<std::string> EncodeResponseHead(int status, std::string_view reason, const HeaderList& headers,
                                               const Http1EncodeOptions& options) {
  if (status < 100 || status > 999) return absl::InvalidArgumentError("invalid status code");
  if (!IsValidReason(reason)) return absl::InvalidArgumentError("invalid reason phrase");
  const bool no_body_status = status < 200 || status == 204;
  if (no_body_status && options.framing != Http1Framing::kNone) {
    return absl::InvalidArgumentError("1xx and 204 responses have no body");
  }
  std::string out = "HTTP/1.1 " + std::to_string(status) + " ";
  out.append(reason).append("\r\n");
  const bool keep_content_length = options.framing == Http1Framing::kNone && !no_body_status;
  if (absl::Status s = AppendHeadFields(headers, options, keep_content_length, &out); !s.ok()) return s;
  return out;
}

void AppendChunk(std::string_view data, std::string* out) {
  if (data.empty()) return;
  char size[24];
  int n = std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  out->append(size, static_cast<size_t>(n));
  out->append(data);
  out->append("\r\n");
}

absl::Status AppendLastChunk(const HeaderList& trailers, std::string* out) {
  std::string section = "0\r\n";
  for (const Header& h : trailers) {
    if (IsFramingField(h.name) || EqualsIgnoreCase(h.name, "host")) {
      return absl::InvalidArgumentError("framing field in trailers");
    }
  }
  if (absl::Status s = AppendFields(trailers, false, &section); !s.ok()) return s;
  section.append("\r\n");
  out->append(section);
  return absl::OkStatus();
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "";
  }
}

std::string CannedErrorResponse(int status, bool keep_alive) {
  switch (status) {
    case 400:
    case 403:
    case 413:
    case 414:
    case 431:
    case 500:
    case 501:
    case 502:
    case 503:
    case 504:
    case 505:
      break;
    default:
      status = 500;
  }
  std::string reason(ReasonPhrase(status));
  std::string body;
  if (status == 403) {
    body = "RBAC: access denied";  // Istio's (Envoy's RBAC filter) body for a policy denial
  } else {
    for (char c : reason) body.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
    body.push_back('\n');
  }
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\ncontent-type: text/plain\r\ncontent-length: " + std::to_string(body.size()) +
         (keep_alive ? "\r\n\r\n" : "\r\nconnection: close\r\n\r\n") + body;
}

}  // namespace ringmesh::proxy::http
