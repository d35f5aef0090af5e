// Field-by-field decoding of JSON with errors that name the field's path:
// the agent->proxy snapshot JSON and the Kubernetes objects parsed beside
// it share these, so both say "spec.rules[0].from: expected a list, got a
// string" in the same words as the node file does.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace ringmesh::json_fields {

// `s` quoted and C-escaped, cut after 80 bytes ("...").
std::string Quote(std::string_view s);
// InvalidArgument "<path>: <message>".
absl::Status FieldError(const std::string& path, std::string_view message);
// "a string", "a list", "a mapping", "an integer", ... (YAML's words, as
// the node file's errors use them).
const char* TypeName(const nlohmann::json& j);
absl::Status WrongType(const std::string& path, std::string_view expected, const nlohmann::json& got);
// A mapping with only `known` keys: an unknown field is an error, so a
// misspelt field (or a newer writer's) is never silently ignored.
absl::Status CheckKeys(const nlohmann::json& j, const std::string& path,
                       std::initializer_list<std::string_view> known);
// The member `key` of `j`, or nullptr when it is absent or null (the API
// server and YAML omit empty fields, and null means the same) or `j` is not
// a mapping.
inline const nlohmann::json* Member(const nlohmann::json& j, std::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}
inline std::string Child(const std::string& path, std::string_view field) {
  return path + "." + std::string(field);
}
inline std::string Index(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }

}  // namespace ringmesh::json_fields
