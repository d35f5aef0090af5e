// HTTP header fields shared by the HTTP/1 and HTTP/2 codecs: an ordered
// list with case-insensitive lookup and byte accounting (so every limit is
// checked against one number), the RFC 9110 syntax checks, and the removal
// of hop-by-hop fields a proxy must not forward (RFC 9110 §7.6.1).
//
//   HeaderList h;
//   h.Add("Host", "example");
//   if (!IsValidHeaderName(name) || !IsValidHeaderValue(value)) reject();
//   RemoveHopByHopHeaders(h, {.keep_upgrade = is_websocket});
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringmesh::proxy::http {

struct Header {
  std::string name;  // as received; compare with EqualsIgnoreCase
  std::string value;
};

// Insertion order is kept: it is forwarded as received, and the order of
// repeated fields carries meaning (RFC 9110 §5.3).
class HeaderList {
 public:
  void Add(std::string_view name, std::string_view value);
  // Removes every field named `name`, then adds one.
  void Set(std::string_view name, std::string_view value);
  // Returns how many fields were removed.
  size_t Remove(std::string_view name);

  // The first field named `name`.
  std::optional<std::string_view> Get(std::string_view name) const;
  std::vector<std::string_view> GetAll(std::string_view name) const;
  size_t Count(std::string_view name) const;
  bool Has(std::string_view name) const { return Count(name) > 0; }

  size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }
  // Sum of name and value lengths of every field: the unit of the codecs'
  // header limits.
  size_t bytes() const { return bytes_; }
  const std::vector<Header>& fields() const { return fields_; }
  std::vector<Header>::const_iterator begin() const { return fields_.begin(); }
  std::vector<Header>::const_iterator end() const { return fields_.end(); }
  void Clear();

  bool operator==(const HeaderList& o) const;

 private:
  std::vector<Header> fields_;
  size_t bytes_ = 0;
};

// ASCII case-insensitive comparison (field names, tokens). Debian's
// abseil has its own string_view type, so its helpers do not take ours.
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// token = 1*tchar (RFC 9110 §5.6.2). Rejects the empty string.
bool IsToken(std::string_view s);
inline bool IsValidHeaderName(std::string_view name) { return IsToken(name); }
// field-value (RFC 9110 §5.5): VCHAR, obs-text, SP and HTAB inside, no
// leading or trailing whitespace, and never CR, LF, NUL or another CTL.
bool IsValidHeaderValue(std::string_view value);
// Strips leading and trailing SP / HTAB (OWS).
std::string_view TrimOws(std::string_view s);
// Calls `fn` with each non-empty, OWS-trimmed element of a comma list
// ("a, b,,c" -> a, b, c), as for Connection or Transfer-Encoding.
template <typename Fn>
void ForEachListElement(std::string_view list, Fn fn) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view element = TrimOws(list.substr(0, comma));
    if (!element.empty()) fn(element);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

struct HopByHopOptions {
  // A protocol switch that is being forwarded (WebSocket): keep Upgrade and
  // the "upgrade" token's meaning; the caller re-adds "Connection: upgrade".
  bool keep_upgrade = false;
  // HTTP/2 and gRPC: "TE: trailers" is the one TE value allowed in h2
  // (RFC 9113 §8.2.2) and gRPC needs it; any other TE is still removed.
  bool keep_te_trailers = false;
};

// Removes Connection, every field Connection names, Keep-Alive,
// Proxy-Connection, TE, Transfer-Encoding and Upgrade (see options).
// Decisions (RFC 9110 §7.6.1, §11.7):
//  - Proxy-Authenticate / Proxy-Authorization are kept: they belong to an
//    explicit proxy the client chose; a transparent proxy that does no
//    proxy authentication of its own must pass them on, not eat them.
//  - A Connection option naming "host" is ignored: stripping Host would
//    turn a valid request invalid, which only an attacker wants.
//  - Content-Length is end-to-end and stays; the encoders write the
//    framing fields themselves from what the caller chose.
void RemoveHopByHopHeaders(HeaderList& headers, const HopByHopOptions& options = {});

}  // namespace ringmesh::proxy::http
