// One inbound HBONE connection on the event loop: a socket accepted on
// <pod IP>:15008 inside an enrolled pod's network namespace, carrying an
// mTLS (TLS 1.3, h2) connection with HTTP/2 CONNECT streams from another
// node's proxy. Each accepted CONNECT becomes a TCP connection to the app,
// made inside the pod's namespace (so the app sees a local peer), and the
// stream's bytes are pumped to and from it.
//
// The protocol work is HboneServerConn's (bytes in, bytes out); this class
// only moves bytes between sockets and it, with every buffer bounded:
// ciphertext in (one recv of kWireChunk, handed to FeedWire, what it does
// not take waits and the socket is not read meanwhile), ciphertext out (one
// send of up to kWireChunk in flight), and per stream one chunk each way
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

namespace ringmesh::proxy {

class Worker;

class InboundTunnel final : public IoHandler, private hbone::HboneServerEvents {
 public:
  static constexpr size_t kWireChunk = 64 * 1024;
  static constexpr size_t kAppChunk = 64 * 1024;
  // A client that has not finished the TLS handshake by then is dropped.
  static constexpr absl::Duration kHandshakeTimeout = absl::Seconds(10);

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
  enum OpTag : uint32_t { kTagRecv, kTagSend, kTagTimer };

  // HboneServerEvents.
  void OnConnect(hbone::StreamId id, const hbone::HboneInboundConnect& connect) override;
  void OnData(hbone::StreamId id) override;
  void OnPeerHalfClosed(hbone::StreamId id) override;
  void OnReset(hbone::StreamId id, hbone::HboneStreamEnd why, uint32_t code) override;
  void OnWritable(hbone::StreamId id) override;
  void OnClosed(hbone::StreamId id) override;
  void OnConnectionError(hbone::HboneConnError error) override;

  App* FindApp(hbone::StreamId id);
  // Moves what can move: wire bytes in (retrying what FeedWire left),
  // ciphertext out, the receive re-armed, then finishes if all is done.
  void Pump();
  void OnWireRecv(const Completion& c);
  void OnWireSend(int res);
  void AppGone(App* app);
  void MaybeFinish();
  bool AnyInFlight() const;

  Worker* w_;
  uint64_t id_;
  int fd_;
  std::shared_ptr<const ListenerInfo> listener_;
  std::unique_ptr<hbone::HboneServerConn> conn_;
  std::map<hbone::StreamId, std::unique_ptr<App>> apps_;
  std::string wire_in_;  // received, not yet taken by FeedWire
  bool wire_eof_ = false;
  bool eof_fed_ = false;
  std::string wire_out_;  // being sent
  size_t wire_out_pos_ = 0;
  bool closing_ = false;
  bool finished_ = false;
  bool reset_ = false;
  bool pumping_ = false;
  bool pump_again_ = false;
  CloseReason reason_ = CloseReason::kNormal;
  IoOp recv_op_{this, OpType::kRecv, kTagRecv};
  IoOp send_op_{this, OpType::kSend, kTagSend};
  IoOp timer_op_{this, OpType::kTimer, kTagTimer};
};

}  // namespace ringmesh::proxy
