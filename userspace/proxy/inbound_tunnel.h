// One inbound HBONE connection on the event loop: a socket accepted on
// <pod IP>:15008 inside an enrolled pod's network namespace, carrying an
// mTLS (TLS 1.3, h2) connection with HTTP/2 CONNECT streams from another
// node's proxy. Each accepted CONNECT becomes a TCP connection to the app,
// made inside the pod's namespace (so the app sees a local peer), and the
// stream's bytes are pumped to and from it.
//
// The protocol work is HboneServerConn's (bytes in, bytes out); this class
// only moves bytes between sockets and it, with every buffer bounded:
// the tunnel socket's ciphertext as TunnelSocket does, and per stream one
// chunk each way
// (an app that does not read stops the stream's HTTP/2 window; an app that
// writes faster than the tunnel drains stops being read until OnWritable).
//
// Lifetime: owned by its Worker like a Connection; Abort() cancels every
// op, and the tunnel frees itself (through the worker) once all final
// completions arrived.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "userspace/proxy/event_loop.h"
#include "userspace/proxy/hbone/hbone_conn.h"
#include "userspace/proxy/orig_dst.h"
#include "userspace/proxy/stats.h"
#include "userspace/proxy/tunnel_socket.h"

namespace ringmesh::proxy {

class Worker;

class InboundTunnel final : public TunnelSocket, private hbone::HboneServerEvents {
 public:
  static constexpr size_t kAppChunk = 64 * 1024;

  InboundTunnel(Worker* worker, uint64_t id, int fd, std::shared_ptr<const ListenerInfo> listener);
  ~InboundTunnel();
  InboundTunnel(const InboundTunnel&) = delete;
  InboundTunnel& operator=(const InboundTunnel&) = delete;

  void Start();
  // Ends the tunnel and every stream now (sockets reset).
  void Abort(CloseReason reason);
  void OnCompletion(IoOp* op, const Completion& c) override;
  uint64_t id() const { return id_; }
  size_t streams() const { return apps_.size(); }

 private:
  class App;  // one stream's app-side socket

  // TunnelSocket.
  hbone::HboneConn* conn() override { return conn_.get(); }
  void OnHandshakeTimeout() override;
  void OnWireError() override { Abort(CloseReason::kDownstreamReset); }

  // HboneServerEvents.
  void OnConnect(hbone::StreamId id, const hbone::HboneInboundConnect& connect) override;
  void OnData(hbone::StreamId id) override;
  void OnPeerHalfClosed(hbone::StreamId id) override;
  void OnReset(hbone::StreamId id, hbone::HboneStreamEnd why, uint32_t code) override;
  void OnWritable(hbone::StreamId id) override;
  void OnClosed(hbone::StreamId id) override;
  void OnConnectionError(hbone::HboneConnError error) override;

  App* FindApp(hbone::StreamId id);
  void AppGone(App* app);
  void MaybeFinish();

  uint64_t id_;
  std::shared_ptr<const ListenerInfo> listener_;
  std::unique_ptr<hbone::HboneServerConn> conn_;
  std::map<hbone::StreamId, std::unique_ptr<App>> apps_;
  bool closing_ = false;
  bool finished_ = false;
  bool reset_ = false;
  CloseReason reason_ = CloseReason::kNormal;
};

}  // namespace ringmesh::proxy
