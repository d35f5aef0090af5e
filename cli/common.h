// Shared pieces of ringmeshctl's subcommands: where to find the node's
// agent, proxy and pins, an HTTP GET over the proxy's admin Unix socket, and
// output as an aligned table or as JSON carrying the same data.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ringmesh::ctl {

struct Globals {
  std::string pin_dir = "/sys/fs/bpf/ringmesh/node";
  std::string proxy_admin = "/run/ringmesh/proxy-admin.sock";
  std::string agent_status = "/run/ringmesh/agent-status.json";
  std::string output = "table";  // table | json
  int timeout_ms = 2000;
};

// GET path from the proxy admin socket; returns the body of a 2xx reply.
absl::StatusOr<std::string> AdminGet(const Globals& g, const std::string& path);
absl::StatusOr<nlohmann::json> AdminGetJson(const Globals& g, const std::string& path);
absl::StatusOr<nlohmann::json> ReadAgentStatus(const Globals& g);

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// Prints `data` as JSON, or calls render_table for the table form.
int Emit(const Globals& g, const nlohmann::json& data, const std::string& table);

std::string JsonStr(const nlohmann::json& j, const char* key, const std::string& fallback = "");
std::string HumanBytes(uint64_t n);
std::string HumanAge(uint64_t ms);

int RunStatus(const Globals& g);
int RunWorkloads(const Globals& g);
int RunServices(const Globals& g);
int RunConnections(const Globals& g);
int RunCerts(const Globals& g);
int RunPolicies(const Globals& g);
int RunBpf(const Globals& g);
int RunBpfFastpath(const Globals& g, bool on);

}  // namespace ringmesh::ctl
