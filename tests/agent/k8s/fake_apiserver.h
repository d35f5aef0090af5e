// A Kubernetes API server double for the endpoint source's tests, speaking
// the real wire format over plain HTTP on 127.0.0.1: JSON lists (kind
// ServiceList... with metadata.resourceVersion, limit/continue pages),
// chunked ?watch=1 streams of ADDED / MODIFIED / DELETED / BOOKMARK / ERROR
// events resumed from a resourceVersion, and 410 Gone once that version has
// been compacted away. Everything a test needs to break is scriptable:
// compaction, ERROR events, dropped and stalled streams, slow events, the
// server going down and coming back on the same port, bearer-token checks.
//
// Resources are "services", "endpointslices", "namespaces", "pods" (pods
// honour fieldSelector=spec.nodeName=<node>; other selectors are ignored).
//
//   FakeApiServer api;
//   ASSERT_TRUE(api.Start().ok());
//   api.Upsert("namespaces", MakeNamespace("default", {{"ringmesh.io/mode", "enabled"}}));
//   opts.api_server = api.url();
//   ...
//   api.Compact(); api.KillWatches();  // the source must relist
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace ringmesh::agent::k8s::testing {

using Json = nlohmann::json;

class FakeApiServer {
 public:
  FakeApiServer();
  ~FakeApiServer();
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  // The first Start binds 127.0.0.1:0; later ones rebind the same port.
  absl::Status Start();
  // Closes the listener and every connection (the API server is down).
  // Objects and history survive for the next Start.
  void Stop();
  std::string url() const;
  uint16_t port() const { return port_; }

  // Stores the object (keyed by namespace/name), sets its
  // metadata.resourceVersion and emits ADDED or MODIFIED.
  void Upsert(const std::string& resource, Json object);
  // Emits DELETED; false when there was no such object.
  bool Delete(const std::string& resource, const std::string& ns, const std::string& name);
  // Appends a raw line (e.g. malformed JSON) to the resource's event stream.
  void EmitRaw(const std::string& resource, const std::string& line);
  // Sends a BOOKMARK at the current resourceVersion to open watches.
  void EmitBookmark(const std::string& resource);
  // Sends an ERROR event with a metav1.Status of this code to open watches,
  // which then end (as the API server does).
  void EmitError(const std::string& resource, int code);
  // Advances the resourceVersion without events (other resources changing).
  void BumpVersion(uint64_t n = 1);
  // Forgets the event history: watches and continue tokens from before now
  // get 410 Gone.
  void Compact();
  // 410 for a too-old watch as an HTTP status (true) or, like the watch
  // cache does, as 200 + an ERROR event with code 410 (false, the default).
  void set_gone_as_http_status(bool v) { gone_as_http_.store(v); }
  // Drops every open watch without the terminating chunk.
  void KillWatches();
  // Open and new watches send nothing at all, not even at their timeout.
  void set_stalled(bool v);
  // Each watch event is delayed by this much (slow streams).
  void set_event_delay(std::chrono::milliseconds d) { event_delay_ms_.store(d.count()); }
  // Requests without "Authorization: Bearer <token>" get 401; "" disables.
  void RequireToken(const std::string& token);
  // Every list (watch=false) or watch (watch=true) of the resource gets this
  // response instead, byte for byte, until ClearErrors(): e.g. a 503 with the
  // Latin-1 HTML page of a load balancer in front of the API server.
  void InjectError(const std::string& resource, bool watch, int code, const std::string& content_type,
                   const std::string& body);
  void ClearErrors();
  int injected_errors() const;  // responses sent by InjectError

  uint64_t resource_version() const;
  int lists(const std::string& resource) const;
  int watches(const std::string& resource) const;
  int open_watches() const;
  int unauthorized() const;
  std::vector<std::string> requests() const;  // request targets, in order
  // List response bytes: the bodies it meant to send, and the bytes (head and
  // body) the kernel took before the client went away.
  uint64_t list_bytes_offered(const std::string& resource) const;
  uint64_t list_bytes_sent(const std::string& resource) const;

 private:
  struct Entry {
    uint64_t seq = 0;
    uint64_t rv = 0;          // 0 for live-only messages (bookmarks, errors)
    std::string line;         // the event, newline-terminated
    std::string node;         // pods: spec.nodeName, for the field selector
    bool live_only = false;   // not replayed to watches that start later
    bool ends_watch = false;  // ERROR events end the stream
  };
  struct Resource {
    std::map<std::string, Json> objects;
    std::vector<Entry> log;
    uint64_t compacted_rv = 0;  // watches from an older version get 410
    int lists = 0;
    int watches = 0;
    uint64_t list_bytes_offered = 0;
    uint64_t list_bytes_sent = 0;
  };
  struct InjectedError {
    int code = 0;
    std::string content_type, body;
  };
  struct Request {
    std::string method, path;
    std::map<std::string, std::string> query;
    std::map<std::string, std::string> headers;  // lower-case names
  };

  void AcceptLoop(int listen_fd);
  void Serve(int fd);
  void ServeList(int fd, const std::string& resource, const Request& req);
  void ServeWatch(int fd, const std::string& resource, const Request& req);
  void Append(Resource& r, Entry e);  // holds mu_
  Json EventObject(const std::string& resource, const Json& object) const;

  std::atomic<uint16_t> port_{0};
  std::atomic<bool> gone_as_http_{false};
  std::atomic<int64_t> event_delay_ms_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Resource> resources_;
  uint64_t rv_ = 1000;
  uint64_t seq_ = 0;
  uint64_t kill_gen_ = 0;
  bool stalled_ = false;
  bool stopping_ = false;
  std::string token_;
  std::map<std::pair<std::string, bool>, InjectedError> errors_;  // by (resource, watch)
  int injected_errors_ = 0;
  int unauthorized_ = 0;
  int open_watches_ = 0;
  std::vector<std::string> requests_;
  std::vector<int> conn_fds_;

  int listen_fd_ = -1;
  std::thread accept_thread_;
  std::list<std::thread> conn_threads_;
};

// A well-formed pod UID (8-4-4-4-12 hex), the same for the same tag, so a
// test can name its pods' UIDs: TestUid("web-1").
std::string TestUid(const std::string& tag);

// Object builders in the API's JSON shape.
Json MakeNamespace(const std::string& name, const std::map<std::string, std::string>& labels = {});
Json MakePod(const std::string& ns, const std::string& name, const std::string& uid, const std::string& node,
             const std::string& ip, const std::map<std::string, std::string>& labels = {},
             const std::map<std::string, std::string>& annotations = {},
             const std::string& qos = "BestEffort");
// ports: {name, port, targetPort}
struct PortSpec {
  std::string name;
  int port = 0;
  Json target_port;  // int or string; null = same as port
};
Json MakeService(const std::string& ns, const std::string& name, const std::string& cluster_ip,
                 const std::vector<PortSpec>& ports, const std::map<std::string, std::string>& labels = {});
struct EndpointSpec {
  std::string ip;
  Json ready = true;  // true, false or null (absent)
  Json serving = nullptr;
  Json terminating = nullptr;
  std::string pod;
};
Json MakeEndpointSlice(const std::string& ns, const std::string& name, const std::string& service,
                       const std::vector<std::pair<std::string, int>>& ports,
                       const std::vector<EndpointSpec>& endpoints);

}  // namespace ringmesh::agent::k8s::testing
