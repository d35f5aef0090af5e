// Outbound HBONE: a connection from an enrolled pod to a mesh pod of
// another node travels as one CONNECT stream inside an mTLS connection to
// that pod's <IP>:15008, presenting the source pod's certificate and
// checking the destination's SPIFFE identity.
//
// OutboundTunnel is one such connection on the event loop (its socket made
// in the source pod's namespace, so it leaves with the pod's IP), shared by
// the streams of one (source identity, destination identity, destination
// IP) up to HboneLimits::max_streams; the worker keeps them in a pool.
//
// TunnelStream stands in for a Connection's upstream socket: the
// Connection calls Connect/Recv/Send/ShutdownWrite/Cancel on it where it
// would call the loop on a socket, and the completions arrive the same way
// (EventLoop::FinishUserOp), so the forwarding state machine, its queues,
// backpressure, timeouts and metrics are the same as for plain TCP.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "userspace/proxy/event_loop.h"
#include "userspace/proxy/hbone/hbone_conn.h"
#include "userspace/proxy/tunnel_socket.h"

namespace ringmesh::proxy {

class Worker;
class OutboundTunnel;

class TunnelStream {
 public:
  explicit TunnelStream(EventLoop* loop) : loop_(loop) {}
  ~TunnelStream();
  TunnelStream(const TunnelStream&) = delete;
  TunnelStream& operator=(const TunnelStream&) = delete;

  // Completes with 0 once the far proxy answered 200, -ECONNREFUSED when it
  // refused (4xx/5xx) or the tunnel could not be made, -ECONNRESET when the
  // stream was reset first.
  void Connect(IoOp* op);
  void Recv(IoOp* op, size_t max_len);
  void Send(IoOp* op, const char* data, size_t len);
  void ShutdownWrite(IoOp* op);
  void Cancel(IoOp* op);
  // The connection is done with it: `reset` (or any unfinished direction)
  // resets the stream; either way it leaves the tunnel.
  void Close(bool reset);
  int status() const { return status_; }  // the far proxy's answer (0 before)

 private:
  friend class OutboundTunnel;
  // From the tunnel.
  void Attach(OutboundTunnel* t, hbone::StreamId sid) {
    tunnel_ = t;
    sid_ = sid;
  }
  void OnEstablished();
  void OnRefused(int status);
  void OnReadable();
  void OnWritable();
  void OnGone(bool reset);  // the stream (or the whole tunnel) ended
  void TryRecv();
  void TrySend();
  void Finish(IoOp*& pending, int res, const char* data = nullptr);

  EventLoop* loop_;
  OutboundTunnel* tunnel_ = nullptr;
  hbone::StreamId sid_ = 0;
  int status_ = 0;
  bool established_ = false;
  bool gone_ = false;
  bool reset_ = false;
  IoOp* connect_ = nullptr;
  IoOp* recv_ = nullptr;
  size_t recv_max_ = 0;
  std::string recv_buf_;
  IoOp* send_ = nullptr;
  const char* send_data_ = nullptr;
  size_t send_len_ = 0;
};

class OutboundTunnel final : public TunnelSocket, private hbone::HboneEvents {
 public:
  // `fd`: a socket in the source pod's namespace, not yet connected.
  OutboundTunnel(Worker* worker, uint64_t id, std::string key, int fd);
  ~OutboundTunnel();
  OutboundTunnel(const OutboundTunnel&) = delete;
  OutboundTunnel& operator=(const OutboundTunnel&) = delete;

  // Connects to `far` (<IP>:15008) with the source's client context,
  // expecting `destination`.
  absl::Status Start(const SocketAddress& far, const std::shared_ptr<SSL_CTX>& client_ctx,
                     tls::SpiffeId destination);
  // A CONNECT to `target` for `stream`.
  absl::Status Open(TunnelStream* stream, const SocketAddress& target, const hbone::HboneConnectOptions& options);
  // Takes new streams (not failed, not draining, under the stream limit).
  bool CanOpen() const;
  // Idle (no streams) since; 0 while streams are open.
  int64_t idle_since_ns() const { return idle_since_ns_; }
  // Closes gracefully (GOAWAY) or, with `abort`, at once.
  void Close(bool abort);
  void OnCompletion(IoOp* op, const Completion& c) override;
  uint64_t id() const { return id_; }
  const std::string& key() const { return key_; }

 private:
  friend class TunnelStream;
  hbone::HboneClientConn* client() { return conn_.get(); }
  void Detach(hbone::StreamId sid);

  // TunnelSocket.
  hbone::HboneConn* conn() override { return conn_.get(); }
  void OnHandshakeTimeout() override { Close(/*abort=*/true); }
  void OnWireError() override { Close(/*abort=*/true); }

  // HboneEvents.
  void OnEstablished(hbone::StreamId id) override;
  void OnRefused(hbone::StreamId id, int status) override;
  void OnData(hbone::StreamId id) override;
  void OnPeerHalfClosed(hbone::StreamId id) override;
  void OnReset(hbone::StreamId id, hbone::HboneStreamEnd why, uint32_t code) override;
  void OnWritable(hbone::StreamId id) override;
  void OnClosed(hbone::StreamId id) override;
  void OnGoaway() override {}
  void OnConnectionError(hbone::HboneConnError error) override;

  TunnelStream* Find(hbone::StreamId id);
  void FailAll();
  void MaybeFinish();

  uint64_t id_;
  std::string key_;
  SocketAddress far_;
  sockaddr_storage far_addr_{};
  socklen_t far_len_ = 0;
  std::unique_ptr<hbone::HboneClientConn> conn_;
  std::map<hbone::StreamId, TunnelStream*> streams_;
  int64_t idle_since_ns_ = 0;
  bool closing_ = false;
  bool aborted_ = false;
  bool finished_ = false;
};

}  // namespace ringmesh::proxy
