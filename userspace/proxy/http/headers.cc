#include "userspace/proxy/http/headers.h"

#include <algorithm>
#include <array>

namespace ringmesh::proxy::http {
namespace {

// RFC 9110 §5.6.2 tchar.
constexpr std::array<bool, 256> MakeTcharTable() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kTchar = MakeTcharTable();

bool IsOws(char c) { return c == ' ' || c == '\t'; }

}  // namespace

void HeaderList::Add(std::string_view name, std::string_view value) {
  fields_.push_back(Header{std::string(name), std::string(value)});
  bytes_ += name.size() + value.size();
}

void HeaderList::Set(std::string_view name, std::string_view value) {
  Remove(name);
  Add(name, value);
}

size_t HeaderList::Remove(std::string_view name) {
  size_t before = fields_.size();
  auto it = std::remove_if(fields_.begin(), fields_.end(), [&](const Header& h) {
    if (!EqualsIgnoreCase(h.name, name)) return false;
    bytes_ -= h.name.size() + h.value.size();
    return true;
  });
  fields_.erase(it, fields_.end());
  return before - fields_.size();
}

std::optional<std::string_view> HeaderList::Get(std::string_view name) const {
  for (const Header& h : fields_) {
    if (EqualsIgnoreCase(h.name, name)) return h.value;
  }
  return std::nullopt;
}

std::vector<std::string_view> HeaderList::GetAll(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const Header& h : fields_) {
    if (EqualsIgnoreCase(h.name, name)) out.push_back(h.value);
  }
  return out;
}

size_t HeaderList::Count(std::string_view name) const {
  return std::count_if(fields_.begin(), fields_.end(),
                       [&](const Header& h) { return EqualsIgnoreCase(h.name, name); });
}

void HeaderList::Clear() {
  fields_.clear();
  bytes_ = 0;
}

bool HeaderList::operator==(const HeaderList& o) const {
  if (fields_.size() != o.fields_.size()) return false;
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (!EqualsIgnoreCase(fields_[i].name, o.fields_[i].name) || fields_[i].value != o.fields_[i].value) {
      return false;
    }
  }
  return true;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return kTchar[static_cast<unsigned char>(c)]; });
}

bool IsValidHeaderValue(std::string_view value) {
  if (!value.empty() && (IsOws(value.front()) || IsOws(value.back()))) return false;
  for (char ch : value) {
    auto c = static_cast<unsigned char>(ch);
    // VCHAR is 0x21-0x7e, obs-text 0x80-0xff; DEL (0x7f) and CTLs other than HTAB are out.
    if (c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f)) continue;
    return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

void RemoveHopByHopHeaders(HeaderList& headers, const HopByHopOptions& options) {
  // Collect the names Connection lists before removing anything.
  std::vector<std::string> listed;
  for (std::string_view value : headers.GetAll("connection")) {
    ForEachListElement(value, [&](std::string_view option) {
      if (EqualsIgnoreCase(option, "host")) return;
      if (options.keep_upgrade && EqualsIgnoreCase(option, "upgrade")) return;
      if (options.keep_te_trailers && EqualsIgnoreCase(option, "te")) return;
      listed.emplace_back(option);
    });
  }
  for (const std::string& name : listed) headers.Remove(name);
  headers.Remove("connection");
  headers.Remove("keep-alive");
  headers.Remove("proxy-connection");
  headers.Remove("transfer-encoding");
  if (!options.keep_upgrade) headers.Remove("upgrade");

  if (options.keep_te_trailers) {
    bool trailers = false;
    for (std::string_view te : headers.GetAll("te")) {
      ForEachListElement(te, [&](std::string_view coding) {
        // "trailers" may carry no parameters (RFC 9110 §10.1.4).
        if (EqualsIgnoreCase(coding, "trailers")) trailers = true;
      });
    }
    headers.Remove("te");
    if (trailers) headers.Add("te", "trailers");
  } else {
    headers.Remove("te");
  }
}

}  // namespace ringmesh::proxy::http
