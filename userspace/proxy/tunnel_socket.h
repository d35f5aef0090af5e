// The socket half of an HBONE connection on the event loop, shared by the
// inbound tunnel (accepted on <pod IP>:15008) and the outbound one
// (connected to a remote pod's 15008). It moves ciphertext between the
// socket and the HboneConn and nothing else, with bounded buffers: one
// receive of kWireChunk at a time, handed to FeedWire (what it does not
// take waits, and the socket is not read meanwhile), and one send of up to
// kWireChunk in flight.
#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "userspace/proxy/event_loop.h"
#include "userspace/proxy/hbone/hbone_conn.h"

namespace ringmesh::proxy {

class Worker;

class TunnelSocket : public IoHandler {
 public:
  static constexpr size_t kWireChunk = 64 * 1024;
  // A peer that has not finished the TLS handshake by then is dropped.
  static constexpr absl::Duration kHandshakeTimeout = absl::Seconds(10);

 protected:
  enum WireTag : uint32_t { kTagRecv = 100, kTagSend, kTagTimer, kTagConnect };

  TunnelSocket(Worker* worker, int fd) : w_(worker), fd_(fd) {}
  ~TunnelSocket() = default;

  virtual hbone::HboneConn* conn() = 0;
  virtual void OnHandshakeTimeout() = 0;
  // The socket failed (send error): the derived class ends everything.
  virtual void OnWireError() = 0;

  // Handles the completion of a wire op; false for ops that are not.
  bool OnWireCompletion(IoOp* op, const Completion& c);
  void StartHandshakeTimer() { w_loop()->StartTimer(&timer_op_, kHandshakeTimeout); }
  // Moves ciphertext both ways and re-arms the receive. Safe to call from
  // inside HboneConn events (a nested call only asks the outer one to loop).
  void PumpWire();
  void CancelWire();
  bool WireInFlight() const {
    return recv_op_.in_flight() || send_op_.in_flight() || timer_op_.in_flight() || connect_op_.in_flight();
  }
  // Everything HboneConn produced has been sent.
  bool WireFlushed() { return !send_op_.in_flight() && conn() != nullptr && conn()->PendingWire() == 0; }
  // Closes the socket (no op may be in flight); `reset` sends RST.
  void CloseWire(bool reset);
  EventLoop* w_loop() const;

  Worker* w_;
  int fd_;
  bool wire_stopped_ = false;  // no more wire I/O (closing)
  IoOp connect_op_{this, OpType::kConnect, kTagConnect};

 private:
  void OnWireRecv(const Completion& c);
  void OnWireSend(int res);

  std::string wire_in_;  // received, not yet taken by FeedWire
  bool wire_eof_ = false;
  bool eof_fed_ = false;
  std::string wire_out_;  // being sent
  size_t wire_out_pos_ = 0;
  bool pumping_ = false;
  bool pump_again_ = false;
  IoOp recv_op_{this, OpType::kRecv, kTagRecv};
  IoOp send_op_{this, OpType::kSend, kTagSend};
  IoOp timer_op_{this, OpType::kTimer, kTagTimer};
};

}  // namespace ringmesh::proxy
