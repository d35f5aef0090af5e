#include "cli/common.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "userspace/common/unique_fd.h"

namespace ringmesh::ctl {

absl::StatusOr<std::string> AdminGet(const Globals& g, const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (g.proxy_admin.size() >= sizeof(sun.sun_path)) return absl::InvalidArgumentError("admin path too long");
  std::memcpy(sun.sun_path, g.proxy_admin.c_str(), g.proxy_admin.size());
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("proxy admin ", g.proxy_admin, ": ", std::strerror(errno), " (is ringmesh-proxy running?)"));
  }
  std::string req = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: ringmesh\r\nConnection: close\r\n\r\n");
  if (write(fd.get(), req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    return absl::UnavailableError(absl::StrCat("write admin request: ", std::strerror(errno)));
  }
  std::string resp;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(g.timeout_ms);
  char buf[16384];
  constexpr size_t kMaxResponse = 64 << 20;
  for (;;) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) return absl::DeadlineExceededError(absl::StrCat("proxy admin ", path, ": timed out"));
    pollfd p{fd.get(), POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("read admin reply: ", std::strerror(errno)));
    if (n == 0) break;
    resp.append(buf, static_cast<size_t>(n));
    if (resp.size() > kMaxResponse) return absl::ResourceExhaustedError("admin reply too large");
  }
  auto head_end = resp.find("\r\n\r\n");
  if (resp.compare(0, 5, "HTTP/") != 0 || head_end == std::string::npos) {
    return absl::DataLossError("malformed admin reply");
  }
  int status = std::atoi(resp.c_str() + resp.find(' ') + 1);
  std::string body = resp.substr(head_end + 4);
  // Connection: close replies may still be chunked; the admin server sends
  // Content-Length, so a chunked body is not expected here.
  if (status < 200 || status > 299) {
    return absl::UnavailableError(absl::StrCat("proxy admin ", path, ": HTTP ", status, ": ", body));
  }
  return body;
}

absl::StatusOr<nlohmann::json> AdminGetJson(const Globals& g, const std::string& path) {
  auto body = AdminGet(g, path);
  if (!body.ok()) return body.status();
  auto j = nlohmann::json::parse(*body, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat("proxy admin ", path, ": reply is not JSON"));
  return j;
}

absl::StatusOr<nlohmann::json> ReadAgentStatus(const Globals& g) {
  std::ifstream in(g.agent_status);
  if (!in) return absl::NotFoundError(absl::StrCat("agent status ", g.agent_status, ": ", std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat("agent status ", g.agent_status, ": not JSON"));
  return j;
}

std::string Table::Render() const {
  std::vector<size_t> w(header_.size(), 0);
  auto widen = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  };
  widen(header_);
  for (const auto& r : rows_) widen(r);
  std::string out;
  auto line = [&](const std::vector<std::string>& r) {
    std::string l;
    for (size_t i = 0; i < w.size(); ++i) {
      std::string cell = i < r.size() ? r[i] : "";
      l += cell;
      if (i + 1 < w.size()) l += std::string(w[i] - cell.size() + 2, ' ');
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(header_);
  for (const auto& r : rows_) line(r);
  return out;
}

int Emit(const Globals& g, const nlohmann::json& data, const std::string& table) {
  if (g.output == "json") {
    std::cout << data.dump() << "\n";  // one line: easy to pipe into jq or a test
  } else {
    std::cout << table;
  }
  return 0;
}

std::string JsonStr(const nlohmann::json& j, const char* key, const std::string& fallback) {
  if (!j.is_object() || !j.contains(key)) return fallback;
  const auto& v = j.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return fallback;
  return v.dump();
}

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  snprintf(buf, sizeof(buf), u == 0 ? "%.0f%s" : "%.1f%s", v, units[u]);
  return buf;
}

std::string HumanAge(uint64_t ms) {
  if (ms < 1000) return absl::StrCat(ms, "ms");
  if (ms < 60000) return absl::StrCat(ms / 1000, "s");
  if (ms < 3600000) return absl::StrCat(ms / 60000, "m", (ms / 1000) % 60, "s");
  return absl::StrCat(ms / 3600000, "h", (ms / 60000) % 60, "m");
}

}  // namespace ringmesh::ctl
