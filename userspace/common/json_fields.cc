#include "userspace/common/json_fields.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace ringmesh::json_fields {
namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

std::string Quote(std::string_view s) {
  constexpr size_t kMax = 80;
  return absl::StrCat("\"", absl::CHexEscape(AV(s.substr(0, std::min(s.size(), kMax)))),
                      s.size() > kMax ? "...\"" : "\"");
}

absl::Status FieldError(const std::string& path, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", AV(message)));
}

const char* TypeName(const nlohmann::json& j) {
  if (j.is_number_integer() || j.is_number_unsigned()) return "an integer";
  if (j.is_number_float()) return "a fractional number";
  if (j.is_string()) return "a string";
  if (j.is_boolean()) return "a boolean";
  if (j.is_array()) return "a list";
  if (j.is_object()) return "a mapping";
  if (j.is_null()) return "null";
  return "something else";
}

absl::Status WrongType(const std::string& path, std::string_view expected, const nlohmann::json& got) {
  return FieldError(path, absl::StrCat("expected ", AV(expected), ", got ", TypeName(got)));
}

absl::Status CheckKeys(const nlohmann::json& j, const std::string& path,
                       std::initializer_list<std::string_view> known) {
  if (!j.is_object()) return WrongType(path, "a mapping", j);
  for (const auto& [key, value] : j.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return FieldError(path, absl::StrCat("unknown field ", Quote(key)));
    }
  }
  return absl::OkStatus();
}

}  // namespace ringmesh::json_fields
