// Making untrusted bytes safe to put in a JSON string. The agent copies
// text it did not write (an API server's error page, a proxy's HTML, names
// from a node file) into log lines, Health() and its JSON status file;
// nlohmann::json throws when it dumps a string that is not UTF-8, and an
// exception there ended the agent. Everything that crosses into JSON goes
// through one of these first.
//
//   std::string msg = Utf8Preview(body, 200);  // "R\xE9essayez..." for Latin-1
//   out << DumpJson(status) << "\n";           // never throws
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"

namespace ringmesh::agent {

// True when s is well-formed UTF-8 (no overlong forms, surrogates, or code
// points above U+10FFFF).
bool IsValidUtf8(std::string_view s);

// s with every byte that is not part of a well-formed UTF-8 sequence written
// as the four characters \xNN (upper-case hex), so the reader still sees
// what was sent. Valid input comes back unchanged.
std::string SanitizeUtf8(std::string_view s);

// SanitizeUtf8 of s, cut to at most max_bytes (never inside a character)
// with "..." appended when it was cut.
std::string Utf8Preview(std::string_view s, size_t max_bytes);

// j.dump() that does not throw: a string that is not UTF-8 has its bad
// bytes replaced by U+FFFD. Use it wherever a JSON document built from
// untrusted text is written out.
std::string DumpJson(const nlohmann::json& j);

}  // namespace ringmesh::agent
