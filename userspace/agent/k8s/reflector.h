// Keeps one kind of Kubernetes object (Services, EndpointSlices, Namespaces,
// the node's Pods) mirrored into a store on its own thread, the way
// client-go's reflector does: list (paginated), then watch from the list's
// resourceVersion with bookmarks; resume the watch from the last version seen
// after any disconnect; relist when the server says the version is gone
// (HTTP 410 or an ERROR event with code 410). Failures back off exponentially
// with jitter, up to a bound. Nothing here blocks the caller: the store is
// the only thing shared, and it does its own locking.
//
//   Reflector r({.kind = "Service", .path = "/api/v1/services"}, &api, opts, &store);
//   r.Start();
//   ...
//   r.state();  // for Health()
//   r.Stop();   // returns promptly even in the middle of a watch
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "userspace/agent/k8s/api_client.h"

namespace ringmesh::agent::k8s {

// Receives what a reflector sees. Called from the reflector's thread.
class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  // A (re)list, item by item as each page is parsed, so that a list never
  // exists as JSON all at once (parsed JSON takes about seven times the
  // bytes of its text): BeginList(), AddListItem() for every item, then
  // EndList(), which makes those items the complete current set, replacing
  // everything. AbortList() instead when the list failed midway: nothing
  // changes. A BeginList() also forgets any list that was not ended.
  virtual void BeginList() = 0;
  virtual void AddListItem(const nlohmann::json& item) = 0;
  virtual void EndList() = 0;
  virtual void AbortList() = 0;
  // One watch event: type is ADDED, MODIFIED or DELETED.
  virtual void Apply(const std::string& type, const nlohmann::json& object) = 0;
};

struct ResourceSpec {
  std::string kind;            // "Service", for messages
  std::string path;            // "/api/v1/services"
  std::string field_selector;  // "spec.nodeName=node-1", or ""
  // Bytes of one list, all pages together; 0: ReflectorOptions::
  // max_list_bytes. A kind whose store keeps little of each item (the
  // cluster-wide pod view) may list more than it may hold in one page:
  // each page stays bounded by ReflectorOptions::max_list_bytes.
  size_t max_list_bytes = 0;
};

struct ReflectorOptions {
  std::chrono::milliseconds backoff_initial{800};
  std::chrono::milliseconds backoff_max{30'000};
  double backoff_jitter = 0.5;  // each delay is scaled by 1 + U[0, jitter), then capped
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds list_timeout{120'000};
  // A watch with no byte for this long is dead (the API server sends
  // bookmarks about once a minute, and ends the watch at timeoutSeconds).
  std::chrono::milliseconds stall_timeout{90'000};
  // Server-side watch length (timeoutSeconds), drawn from [min, max] so the
  // reflectors of many nodes do not reconnect in lockstep. Kept below
  // stall_timeout so a quiet but healthy watch ends cleanly before it would
  // count as stalled.
  std::chrono::seconds watch_timeout_min{60};
  std::chrono::seconds watch_timeout_max{80};
  int page_size = 500;
  // Bytes of one (re)list, all pages together; past it the reader stops
  // reading, and the list fails and is retried with backoff. The agent's
  // container is limited to 256 MiB (deploy/daemonset). A page is held as
  // text and parsed item by item (the store keeps typed objects, a fraction
  // of the text's size), so a list costs about this much at worst, and only
  // Services and EndpointSlices can get big (Pods are this node's only): two
  // at the bound still leave half the limit. 64 MiB is ~25k EndpointSlices
  // or ~60k Services at their usual 1-2.5 KiB of JSON: more than the
  // largest clusters Kubernetes supports (10k Services). --k8s-max-list-bytes.
  size_t max_list_bytes = size_t{64} << 20;
  // One watch event, parsed whole (about 7x its text in memory). An object
  // is at most ~1.5 MiB (etcd's request limit), so 4 MiB never cuts a real
  // one. --k8s-max-event-bytes.
  size_t max_event_bytes = size_t{4} << 20;
};

struct ReflectorState {
  bool synced = false;     // a list has completed at least once
  bool connected = false;  // currently watching
  std::string error;       // last failure, "" once it recovered
  std::chrono::steady_clock::time_point retry_at{};
  std::string resource_version;
  uint64_t lists = 0;
  uint64_t watches = 0;
  uint64_t events = 0;
  uint64_t relists_after_gone = 0;
};

class Reflector {
 public:
  Reflector(ResourceSpec spec, const ApiConfig& api, TokenSource* token, ReflectorOptions opts,
            ObjectStore* store);
  ~Reflector();  // stops
  Reflector(const Reflector&) = delete;
  Reflector& operator=(const Reflector&) = delete;

  void Start();
  void Stop();
  ReflectorState state() const;
  const ResourceSpec& spec() const { return spec_; }

 private:
  enum class WatchEnd { kClean, kGone };

  void Run();
  absl::Status List();
  absl::Status ListPages(std::string* rv, size_t* count);
  absl::StatusOr<WatchEnd> Watch(bool* made_progress);
  absl::StatusOr<HttpResult> Get(const std::string& query, std::chrono::milliseconds total_timeout,
                                 const std::function<bool(std::string_view)>& on_body);
  absl::Status HttpError(const std::string& what, const HttpResult& res);
  std::string Url(const std::string& query) const;
  std::chrono::milliseconds NextBackoff();
  void SleepFor(std::chrono::milliseconds d);
  void SetError(const absl::Status& st, std::chrono::milliseconds retry_in);

  const ResourceSpec spec_;
  const std::string server_;
  TokenSource* const token_;
  const ReflectorOptions opts_;
  ObjectStore* const store_;
  HttpClient http_;
  std::mt19937_64 rng_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  ReflectorState state_;
  int failures_ = 0;  // reflector thread only
  std::string last_error_;  // the last failure logged; reflector thread only
  std::string rv_;    // reflector thread only; "" means list next
  std::thread thread_;
};

}  // namespace ringmesh::agent::k8s
