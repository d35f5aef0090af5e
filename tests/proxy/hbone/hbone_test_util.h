// Helpers for the HBONE tests: a mesh CA with client/server identities, an
// event recorder that can read streams as bytes arrive, and an in-memory
// wire that moves ciphertext between a client and a server connection
// (honouring what FeedWire accepts).
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/proxy/tls/tls_test_util.h"
#include "userspace/proxy/hbone/hbone_conn.h"

namespace ringmesh::proxy::hbone::testing {

using tls::testing::Ctx;
using tls::testing::Id;
using tls::testing::Issue;
using tls::testing::Roots;

struct Recorder : HboneServerEvents {
  HboneConn* conn = nullptr;  // for auto_read
  bool auto_read = true;      // Read everything in OnData into `received`
  std::set<StreamId> established;
  std::map<StreamId, int> refused;
  std::map<StreamId, std::pair<HboneStreamEnd, uint32_t>> resets;
  std::set<StreamId> half_closed, closed;
  std::map<StreamId, int> writable;
  std::map<StreamId, std::string> received;
  std::vector<std::pair<StreamId, HboneInboundConnect>> connects;
  std::function<void(StreamId, const HboneInboundConnect&)> on_connect;
  int goaways = 0;
  std::vector<HboneConnError> conn_errors;

  void OnEstablished(StreamId id) override { established.insert(id); }
  void OnRefused(StreamId id, int status) override { refused[id] = status; }
  void OnData(StreamId id) override {
    if (!auto_read || conn == nullptr) return;
    char buf[8192];
    while (size_t n = conn->Read(id, std::span(reinterpret_cast<uint8_t*>(buf), sizeof(buf)))) {
      received[id].append(buf, n);
    }
  }
  void OnPeerHalfClosed(StreamId id) override { half_closed.insert(id); }
  void OnReset(StreamId id, HboneStreamEnd why, uint32_t code) override { resets[id] = {why, code}; }
  void OnWritable(StreamId id) override { ++writable[id]; }
  void OnClosed(StreamId id) override { closed.insert(id); }
  void OnGoaway() override { ++goaways; }
  void OnConnectionError(HboneConnError e) override { conn_errors.push_back(e); }
  void OnConnect(StreamId id, const HboneInboundConnect& c) override {
    connects.emplace_back(id, c);
    if (on_connect) on_connect(id, c);
  }
};

// Ciphertext in flight between two connections.
class Wire {
 public:
  Wire(HboneConn& a, HboneConn& b) : a_(a), b_(b) {}
  // One round: up to `budget` bytes each way. Returns whether anything moved.
  bool Step(size_t budget = 64 * 1024) {
    bool progress = Move(a_, b_, a_to_b_, budget);
    progress |= Move(b_, a_, b_to_a_, budget);
    return progress;
  }
  // Until nothing moves.
  void Run(int max_rounds = 100000) {
    for (int i = 0; i < max_rounds && Step(); ++i) {
    }
  }
  size_t in_flight() const { return a_to_b_.size() + b_to_a_.size(); }

 private:
  static bool Move(HboneConn& from, HboneConn& to, std::vector<uint8_t>& q, size_t budget) {
    bool progress = false;
    if (q.size() < budget) {
      size_t old = q.size();
      q.resize(budget);
      size_t n = from.TakeWire(std::span(q.data() + old, budget - old));
      q.resize(old + n);
      progress |= n > 0;
    }
    if (!q.empty()) {
      size_t n = to.FeedWire(q);
      q.erase(q.begin(), q.begin() + static_cast<long>(n));
      progress |= n > 0;
    }
    return progress;
  }
  HboneConn& a_;
  HboneConn& b_;
  std::vector<uint8_t> a_to_b_, b_to_a_;
};

// A mesh: one CA, identities of cluster.local, and contexts.
struct Mesh {
  tls::testing::TestCa ca = tls::testing::MakeCa("mesh");
  tls::TrustBundle::StorePtr roots = Roots({ca.pem.root_pem});
  tls::SpiffeId client_id = Id("spiffe://cluster.local/ns/apps/sa/client");
  tls::SpiffeId server_id = Id("spiffe://cluster.local/ns/apps/sa/server");
  tls::testing::Identity client = Issue(*ca.ca, client_id);
  tls::testing::Identity server = Issue(*ca.ca, server_id);
  std::shared_ptr<SSL_CTX> client_ctx = Ctx(tls::TlsRole::kClient, client, roots);
  std::shared_ptr<SSL_CTX> server_ctx = Ctx(tls::TlsRole::kServer, server, roots);
};

}  // namespace ringmesh::proxy::hbone::testing
