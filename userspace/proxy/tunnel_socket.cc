#include "userspace/proxy/tunnel_socket.h"

#include <sys/socket.h>

#include <cerrno>

#include "userspace/proxy/worker.h"

namespace ringmesh::proxy {

EventLoop* TunnelSocket::w_loop() const { return w_->loop(); }

bool TunnelSocket::OnWireCompletion(IoOp* op, const Completion& c) {
  if (op == &recv_op_) {
    OnWireRecv(c);
  } else if (op == &send_op_) {
    OnWireSend(c.res);
  } else if (op == &timer_op_) {
    if (c.res == 0 && !wire_stopped_ && conn() != nullptr && !conn()->handshake_done()) OnHandshakeTimeout();
  } else {
    return false;
  }
  return true;
}

void TunnelSocket::OnWireRecv(const Completion& c) {
  if (wire_stopped_) return;
  if (c.res > 0) {
    std::string_view data(c.data, static_cast<size_t>(c.res));
    if (wire_in_.empty()) {
      data.remove_prefix(conn()->FeedWire({reinterpret_cast<const uint8_t*>(data.data()), data.size()}));
    }
    wire_in_.append(data);
  } else if (c.res != -ECANCELED) {
    wire_eof_ = true;  // EOF, or a reset: what was received still counts
  }
}

void TunnelSocket::OnWireSend(int res) {
  if (wire_stopped_) return;
  if (res < 0) {
    OnWireError();
    return;
  }
  wire_out_pos_ += static_cast<size_t>(res);
  if (wire_out_pos_ < wire_out_.size()) {
    w_loop()->Send(&send_op_, fd_, wire_out_.data() + wire_out_pos_, wire_out_.size() - wire_out_pos_);
  }
}

void TunnelSocket::PumpWire() {
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  if (wire_stopped_ || conn() == nullptr || fd_ < 0 || connect_op_.in_flight()) return;
  pumping_ = true;
  do {
    pump_again_ = false;
    hbone::HboneConn* c = conn();
    if (!wire_in_.empty()) {
      wire_in_.erase(0, c->FeedWire({reinterpret_cast<const uint8_t*>(wire_in_.data()), wire_in_.size()}));
    }
    if (wire_in_.empty() && wire_eof_ && !eof_fed_) {
      eof_fed_ = true;
      c->FeedEof();
    }
    if (wire_stopped_) break;
    if (c->handshake_done()) w_loop()->Cancel(&timer_op_);
    if (!send_op_.in_flight() && c->PendingWire() > 0) {
      wire_out_.resize(kWireChunk);
      wire_out_.resize(c->TakeWire({reinterpret_cast<uint8_t*>(wire_out_.data()), wire_out_.size()}));
      wire_out_pos_ = 0;
      if (!wire_out_.empty()) w_loop()->Send(&send_op_, fd_, wire_out_.data(), wire_out_.size());
    }
    if (!recv_op_.in_flight() && wire_in_.empty() && !wire_eof_ && !c->Finished()) {
      w_loop()->Recv(&recv_op_, fd_, kWireChunk);
    }
  } while (pump_again_ && !wire_stopped_);
  pumping_ = false;
}

void TunnelSocket::CancelWire() {
  wire_stopped_ = true;
  for (IoOp* op : {&recv_op_, &send_op_, &timer_op_, &connect_op_}) w_loop()->Cancel(op);
}

void TunnelSocket::CloseWire(bool reset) {
  if (fd_ < 0) return;
  if (reset) {
    linger lg{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  w_loop()->Close(fd_);
  fd_ = -1;
}

}  // namespace ringmesh::proxy
