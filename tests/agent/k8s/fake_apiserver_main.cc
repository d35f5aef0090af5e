// fake-apiserver: the tests' FakeApiServer as a standalone process, for
// namespace tests that run the real agent against it
// (tests/netns/k8s_e2e_test.sh). It serves the real wire format (lists,
// chunked watches, resourceVersions) over plain HTTP on 127.0.0.1.
//
//   fake-apiserver --state state.json --ready-file port.txt [--applied-file applied.json]
//
// The state file is the whole desired world, rewritten by the test (write a
// temporary file and rename it over the old one):
//
//   {"serial": 3,
//    "namespaces":     [{"name": "shop", "labels": {"ringmesh.io/mode": "enabled"}}],
//    "pods":           [{"namespace": "shop", "name": "b1", "uid": "...", "node": "n1",
//                        "ip": "198.18.1.11", "labels": {}, "annotations": {}, "qosClass": "BestEffort"}],
//    "services":       [{"namespace": "shop", "name": "web", "clusterIP": "198.18.200.10",
//                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}],
//    "endpointslices": [{"namespace": "shop", "name": "web-1", "service": "web",
//                        "ports": [{"name": "http", "port": 8080}],
//                        "endpoints": [{"ip": "198.18.1.11", "ready": true, "pod": "b1"}]}]}
//
// Each item is either that compact form (turned into a full API object by
// the builders of fake_apiserver.h) or a complete API object (it has
// "metadata"), taken as it is. The file is checked every --poll-ms; when it
// changed, the difference to what is served is applied: new and changed
// objects are upserted (ADDED / MODIFIED), missing ones deleted (DELETED).
// After each applied state --applied-file is rewritten (atomically) with
//   {"serial": 3, "resourceVersion": 1012, "unix_ns": ..., "changes": 1}
// where unix_ns is CLOCK_REALTIME right after the last event was emitted,
// so a test can measure how long the agent takes from there. A state file
// that does not parse is reported on stderr and ignored (the last good one
// keeps serving).
//
// The port (chosen by the kernel) is written to --ready-file once the
// initial state is served. The process ends on SIGTERM/SIGINT or after
// --max-runtime-s.
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>

#include "CLI/CLI.hpp"
#include "tests/agent/k8s/fake_apiserver.h"

namespace {

using ringmesh::agent::k8s::testing::EndpointSpec;
using ringmesh::agent::k8s::testing::FakeApiServer;
using ringmesh::agent::k8s::testing::Json;
using ringmesh::agent::k8s::testing::PortSpec;
namespace t = ringmesh::agent::k8s::testing;

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

const char* const kResources[] = {"namespaces", "pods", "services", "endpointslices"};

std::map<std::string, std::string> StringMap(const Json& item, const char* key) {
  std::map<std::string, std::string> out;
  auto it = item.find(key);
  if (it == item.end() || it->is_null()) return out;
  for (const auto& [k, v] : it->items()) out[k] = v.get<std::string>();
  return out;
}

std::string Str(const Json& item, const char* key, const std::string& def = "") {
  auto it = item.find(key);
  return it == item.end() || it->is_null() ? def : it->get<std::string>();
}

// A compact item (see the header comment) as a full API object. Throws
// nlohmann::json exceptions on wrong types.
Json Build(const std::string& resource, const Json& item) {
  if (item.contains("metadata")) return item;
  const std::string ns = Str(item, "namespace");
  const std::string name = Str(item, "name");
  if (name.empty()) throw std::runtime_error(resource + " item without a name");
  if (resource == "namespaces") return t::MakeNamespace(name, StringMap(item, "labels"));
  if (resource == "pods") {
    return t::MakePod(ns, name, Str(item, "uid"), Str(item, "node"), Str(item, "ip"), StringMap(item, "labels"),
                      StringMap(item, "annotations"), Str(item, "qosClass", "BestEffort"));
  }
  if (resource == "services") {
    std::vector<PortSpec> ports;
    for (const auto& p : item.value("ports", Json::array())) {
      ports.push_back({p.value("name", ""), p.at("port").get<int>(), p.value("targetPort", Json())});
    }
    return t::MakeService(ns, name, Str(item, "clusterIP"), ports, StringMap(item, "labels"));
  }
  // endpointslices
  std::vector<std::pair<std::string, int>> ports;
  for (const auto& p : item.value("ports", Json::array())) {
    ports.emplace_back(p.value("name", ""), p.at("port").get<int>());
  }
  std::vector<EndpointSpec> eps;
  for (const auto& e : item.value("endpoints", Json::array())) {
    EndpointSpec s;
    s.ip = e.at("ip").get<std::string>();
    s.ready = e.value("ready", Json(true));
    s.serving = e.value("serving", Json());
    s.terminating = e.value("terminating", Json());
    s.pod = e.value("pod", "");
    eps.push_back(std::move(s));
  }
  return t::MakeEndpointSlice(ns, name, Str(item, "service"), ports, eps);
}

std::string KeyOf(const Json& o) {
  const Json& md = o.at("metadata");
  std::string ns = md.value("namespace", "");
  std::string name = md.at("name").get<std::string>();
  return ns.empty() ? name : ns + "/" + name;
}

// resource -> key -> object (without metadata.resourceVersion)
using World = std::map<std::string, std::map<std::string, Json>>;

std::optional<World> Load(const std::string& path, int64_t* serial, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot open " + path;
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    Json doc = Json::parse(ss.str());
    if (!doc.is_object()) throw std::runtime_error("not a JSON object");
    World w;
    for (const char* r : kResources) {
      w[r];
      for (const auto& item : doc.value(r, Json::array())) {
        Json o = Build(r, item);
        o["metadata"].erase("resourceVersion");
        std::string key = KeyOf(o);
        if (w[r].count(key)) throw std::runtime_error(std::string(r) + " " + key + " appears twice");
        w[r][key] = std::move(o);
      }
    }
    for (const auto& [k, v] : doc.items()) {
      if (k != "serial" && !w.count(k)) throw std::runtime_error("unknown key \"" + k + "\"");
    }
    *serial = doc.value("serial", int64_t{0});
    return w;
  } catch (const std::exception& e) {
    *error = e.what();
    return std::nullopt;
  }
}

// Makes the server serve `next`; returns the number of events emitted.
int ApplyWorld(FakeApiServer& api, World& served, const World& next) {
  int changes = 0;
  for (const char* r : kResources) {
    auto& cur = served[r];
    const auto& want = next.at(r);
    for (auto it = cur.begin(); it != cur.end();) {
      if (want.count(it->first)) {
        ++it;
        continue;
      }
      const Json& md = it->second.at("metadata");
      api.Delete(r, md.value("namespace", ""), md.at("name").get<std::string>());
      ++changes;
      it = cur.erase(it);
    }
    for (const auto& [key, obj] : want) {
      auto it = cur.find(key);
      if (it != cur.end() && it->second == obj) continue;
      api.Upsert(r, obj);
      cur[key] = obj;
      ++changes;
    }
  }
  return changes;
}

bool WriteAtomic(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << data;
    if (!out) return false;
  }
  return rename(tmp.c_str(), path.c_str()) == 0;
}

int64_t UnixNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// What identifies one version of the state file.
using FileId = std::tuple<dev_t, ino_t, off_t, int64_t>;
std::optional<FileId> Identify(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino, st.st_size,
                static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fake-apiserver: a scriptable Kubernetes API server double on 127.0.0.1 for namespace tests"};
  std::string state_file, ready_file, applied_file, token;
  int poll_ms = 10, max_runtime_s = 900;
  app.add_option("--state", state_file, "JSON file with the objects to serve (rewritten by the test)")
      ->required();
  app.add_option("--ready-file", ready_file, "written with the listening port once serving")->required();
  app.add_option("--applied-file", applied_file, "rewritten with serial/resourceVersion/time after each change");
  app.add_option("--poll-ms", poll_ms, "how often the state file is checked")->check(CLI::Range(1, 10000));
  app.add_option("--max-runtime-s", max_runtime_s, "exit after this long")->check(CLI::Range(1, 86400));
  app.add_option("--token", token, "require this bearer token");
  CLI11_PARSE(app, argc, argv);

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  FakeApiServer api;
  if (!token.empty()) api.RequireToken(token);
  World served;
  for (const char* r : kResources) served[r];

  auto load_and_apply = [&](bool initial) -> bool {
    int64_t serial = 0;
    std::string error;
    auto world = Load(state_file, &serial, &error);
    if (!world) {
      std::fprintf(stderr, "fake-apiserver: %s: %s (keeping the last good state)\n", state_file.c_str(),
                   error.c_str());
      return false;
    }
    int changes = ApplyWorld(api, served, *world);
    int64_t now = UnixNs();
    std::fprintf(stderr, "fake-apiserver: %s serial %lld: %d change(s), resourceVersion %llu\n",
                 initial ? "initial state" : "state", static_cast<long long>(serial), changes,
                 static_cast<unsigned long long>(api.resource_version()));
    if (!applied_file.empty()) {
      Json j{{"serial", serial},
             {"resourceVersion", api.resource_version()},
             {"unix_ns", now},
             {"changes", changes}};
      if (!WriteAtomic(applied_file, j.dump() + "\n")) {
        std::fprintf(stderr, "fake-apiserver: cannot write %s\n", applied_file.c_str());
      }
    }
    return true;
  };

  auto id = Identify(state_file);
  if (!load_and_apply(true)) return 1;
  if (auto st = api.Start(); !st.ok()) {
    std::fprintf(stderr, "fake-apiserver: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  if (!WriteAtomic(ready_file, std::to_string(api.port()) + "\n")) {
    std::fprintf(stderr, "fake-apiserver: cannot write %s\n", ready_file.c_str());
    return 1;
  }
  std::fprintf(stderr, "fake-apiserver: serving %s\n", api.url().c_str());

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(max_runtime_s);
  while (!g_stop.load()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::fprintf(stderr, "fake-apiserver: --max-runtime-s %d reached\n", max_runtime_s);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
    auto now_id = Identify(state_file);
    if (now_id && now_id != id) {
      id = now_id;
      load_and_apply(false);
    }
  }
  api.Stop();
  std::fprintf(stderr, "fake-apiserver: stopped\n");
  return 0;
}
