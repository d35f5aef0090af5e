// HboneClientConn ↔ HboneServerConn pumped in memory: bulk transfer with a
// slow consumer under the documented bounds, many streams, half-close,
// every refusal, identity failures, GOAWAY and a plaintext peer.
#include "userspace/proxy/hbone/hbone_conn.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <memory>

#include "tests/proxy/hbone/hbone_test_util.h"
#include "userspace/proxy/hbone/hbone_pool.h"

namespace ringmesh::proxy::hbone {
namespace {

using testing::Mesh;
using testing::Recorder;
using testing::Wire;
using tls::testing::Id;

const SocketAddress kTarget = *SocketAddress::Parse("10.1.2.3:8080");

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// A client and a server connection joined by an in-memory wire.
struct Pair {
  Recorder cev, sev;
  std::unique_ptr<HboneClientConn> client;
  std::unique_ptr<HboneServerConn> server;
  std::unique_ptr<Wire> wire;
  std::set<SocketAddress> served = {kTarget};

  Pair(const Mesh& m, HboneServerPolicy policy = {}, HboneLimits limits = {},
       std::shared_ptr<SSL_CTX> client_ctx = nullptr, std::optional<tls::SpiffeId> expect = std::nullopt) {
    if (!policy.serves) policy.serves = [this](const SocketAddress& a) { return served.contains(a); };
    auto c = HboneClientConn::Create(client_ctx ? client_ctx : m.client_ctx, expect ? *expect : m.server_id,
                                     &cev, limits);
    EXPECT_TRUE(c.ok()) << c.status();
    client = *std::move(c);
    auto s = HboneServerConn::Create(m.server_ctx, "cluster.local", std::move(policy), &sev, limits);
    EXPECT_TRUE(s.ok()) << s.status();
    server = *std::move(s);
    cev.conn = client.get();
    sev.conn = server.get();
    sev.on_connect = [this](StreamId id, const HboneInboundConnect&) {
      EXPECT_TRUE(server->Accept(id).ok());
    };
    wire = std::make_unique<Wire>(*client, *server);
  }
  void Run() { wire->Run(); }
  // Opens a stream and runs until the server answered.
  StreamId Open(const SocketAddress& target = kTarget, HboneConnectOptions opts = {}) {
    auto id = client->OpenStream(target, opts);
    EXPECT_TRUE(id.ok()) << id.status();
    Run();
    return id.ok() ? *id : -1;
  }
  // The server's id of the client's stream (the same number in HTTP/2).
};

class HboneConnTest : public ::testing::Test {
 protected:
  Mesh mesh_;
};

TEST_F(HboneConnTest, ConnectCarriesZtunnelHeadersAndEchoes) {
  Pair p(mesh_);
  HboneConnectOptions opts;
  opts.source_ip = IpAddress::Parse("10.9.8.7");
  opts.baggage = {{"k8s.namespace.name", "apps"}, {"k8s.pod.name", "client-0"}};
  StreamId id = p.Open(kTarget, opts);
  ASSERT_TRUE(p.cev.established.contains(id));
  ASSERT_EQ(p.sev.connects.size(), 1u);
  const HboneInboundConnect& c = p.sev.connects[0].second;
  EXPECT_EQ(c.request.target, kTarget);
  EXPECT_EQ(c.peer, mesh_.client_id);
  ASSERT_TRUE(c.request.forwarded_for.has_value());
  EXPECT_EQ(c.request.forwarded_for->ToString(), "10.9.8.7");
  EXPECT_TRUE(IsValidTraceparent(c.request.traceparent));
  bool baggage = false;
  for (const auto& [k, v] : c.request.headers)
    baggage |= k == "baggage" && v == "k8s.namespace.name=apps,k8s.pod.name=client-0";
  EXPECT_TRUE(baggage);
  EXPECT_EQ(*p.client->peer_id(), mesh_.server_id);

  EXPECT_EQ(p.client->Write(id, Bytes("ping")), 4u);
  p.Run();
  EXPECT_EQ(p.sev.received[id], "ping");
  EXPECT_EQ(p.server->Write(id, Bytes("pong")), 4u);
  p.Run();
  EXPECT_EQ(p.cev.received[id], "pong");
}

// Deterministic bytes, made chunk by chunk so 64 MiB is never held.
class Source {
 public:
  explicit Source(uint64_t seed) : state_(seed | 1) {}
  // Fills `out` with the next bytes of the stream.
  void Next(std::span<uint8_t> out) {
    for (uint8_t& b : out) {
      if (avail_ == 0) {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 7;
        state_ ^= state_ << 17;
        word_ = state_;
        avail_ = 8;
      }
      b = static_cast<uint8_t>(word_);
      word_ >>= 8;
      --avail_;
    }
  }

 private:
  uint64_t state_, word_ = 0;
  int avail_ = 0;
};

struct Sha256 {
  Sha256() : ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free) { EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr); }
  void Add(std::span<const uint8_t> d) { EVP_DigestUpdate(ctx.get(), d.data(), d.size()); }
  std::string Hex() {
    unsigned char md[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    std::string s;
    for (unsigned i = 0; i < len; ++i)
      s += "0123456789abcdef"[md[i] >> 4], s += "0123456789abcdef"[md[i] & 15];
    return s;
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx;
};

// One direction of the bulk transfer.
struct Flow {
  HboneConn* sender;
  HboneConn* receiver;
  Source src;
  Sha256 sent_hash, recv_hash;
  size_t sent = 0, received = 0;
  bool write_closed = false;
  std::vector<uint8_t> pending;  // generated, not yet accepted by Write
  size_t pending_pos = 0;
  uint64_t short_writes = 0;
};

void ExpectWithinBounds(const HboneConn& c, StreamId id, size_t* max_receive) {
  const HboneLimits& l = c.limits();
  HboneBuffered b = c.Buffered();
  // The documented bounds (hbone_conn.h).
  ASSERT_LE(b.tls_pending_wire, l.tls.max_pending_wire + 16 * 1024);
  const size_t conn_window = std::max<size_t>(l.http2.connection_window, 4 * l.http2.initial_stream_window);
  ASSERT_LE(b.receive, conn_window);
  ASSERT_LE(c.Readable(id), l.http2.initial_stream_window);
  ASSERT_LE(b.h2_send, l.http2.max_stream_send_buffer * std::max<size_t>(1, c.active_streams()));
  ASSERT_LE(c.Buffered().h2_memory, l.http2.max_session_memory + 2 * (l.http2.max_output_buffer + 32 * 1024) +
                                        c.active_streams() * (512 + 2 * l.http2.max_stream_send_buffer));
  *max_receive = std::max(*max_receive, b.receive);
}

TEST_F(HboneConnTest, SixtyFourMebibytesEachWaySlowConsumerStaysBounded) {
  constexpr size_t kTotal = 64u << 20;
  constexpr size_t kWriteChunk = 64 * 1024;
  constexpr size_t kReadPerRound = 12 * 1024;  // slower than the writer: backpressure must build up
  Pair p(mesh_);
  p.cev.auto_read = p.sev.auto_read = false;
  StreamId id = p.Open();
  ASSERT_TRUE(p.cev.established.contains(id));

  Flow up{p.client.get(), p.server.get(), Source(1)};
  Flow down{p.server.get(), p.client.get(), Source(2)};
  std::vector<uint8_t> rbuf(kReadPerRound);
  size_t max_receive_client = 0, max_receive_server = 0;
  for (int round = 0; round < 10'000'000; ++round) {
    bool done = true;
    for (Flow* f : {&up, &down}) {
      // Writer: offers a chunk; keeps what was not accepted for later.
      if (f->sent < kTotal) {
        if (f->pending_pos == f->pending.size()) {
          f->pending.resize(std::min(kWriteChunk, kTotal - f->sent));
          f->src.Next(f->pending);
          f->pending_pos = 0;
        }
        std::span<const uint8_t> rest(f->pending.data() + f->pending_pos, f->pending.size() - f->pending_pos);
        size_t n = f->sender->Write(id, rest);
        if (n < rest.size()) ++f->short_writes;
        f->sent_hash.Add(rest.first(n));
        f->pending_pos += n;
        f->sent += n;
      } else if (!f->write_closed) {
        ASSERT_TRUE(f->sender->CloseWrite(id));
        f->write_closed = true;
      }
      // Slow reader: a little per round.
      size_t n = f->receiver->Read(id, rbuf);
      f->recv_hash.Add(std::span(rbuf.data(), n));
      f->received += n;
      done &= f->received == kTotal && f->receiver->PeerClosed(id);
    }
    p.wire->Step(32 * 1024);
    ExpectWithinBounds(*p.client, id, &max_receive_client);
    ExpectWithinBounds(*p.server, id, &max_receive_server);
    if (done) break;
  }
  ASSERT_EQ(up.received, kTotal);
  ASSERT_EQ(down.received, kTotal);
  EXPECT_EQ(up.sent_hash.Hex(), up.recv_hash.Hex());
  EXPECT_EQ(down.sent_hash.Hex(), down.recv_hash.Hex());
  // The consumer was slower than the producer, so the bounds were actually reached.
  EXPECT_GT(up.short_writes, 0u);
  EXPECT_GT(down.short_writes, 0u);
  EXPECT_GE(max_receive_server, p.server->limits().http2.initial_stream_window / 2);
  EXPECT_GE(max_receive_client, p.client->limits().http2.initial_stream_window / 2);
  p.Run();
  EXPECT_TRUE(p.cev.closed.contains(id));
  EXPECT_TRUE(p.sev.closed.contains(id));
  EXPECT_FALSE(p.client->failed());
  EXPECT_FALSE(p.server->failed());
}

TEST_F(HboneConnTest, HundredStreamsOnOneConnectionThe101stGoesToASecondViaThePool) {
  absl::Time now = absl::FromUnixSeconds(1'000'000);
  HbonePoolOptions popts;
  popts.clock = [&] { return now; };
  HbonePool pool(popts);
  HbonePoolKey key{mesh_.client_id, mesh_.server_id, kTarget.ip};
  std::map<HbonePool::ConnId, std::unique_ptr<Pair>> conns;
  std::vector<std::pair<HbonePool::ConnId, StreamId>> streams;
  for (int i = 0; i < 101; ++i) {
    auto got = pool.Acquire(key);
    ASSERT_TRUE(got.ok());
    if (got->is_new) conns[got->id] = std::make_unique<Pair>(mesh_);
    auto id = conns.at(got->id)->client->OpenStream(kTarget);
    ASSERT_TRUE(id.ok()) << i << ": " << id.status();
    streams.emplace_back(got->id, *id);
  }
  ASSERT_EQ(conns.size(), 2u);
  auto first = conns.begin()->first;
  auto second = std::next(conns.begin())->first;
  EXPECT_EQ(pool.streams(first), 100u);
  EXPECT_EQ(pool.streams(second), 1u);
  // The connection itself refuses a 101st stream too.
  EXPECT_EQ(conns[first]->client->OpenStream(kTarget).status().code(), absl::StatusCode::kResourceExhausted);
  for (auto& [cid, p] : conns) p->Run();
  EXPECT_EQ(conns[first]->server->active_streams(), 100u);
  EXPECT_EQ(conns[first]->cev.established.size(), 100u);
  EXPECT_EQ(conns[second]->cev.established.size(), 1u);

  // Every stream carries its own bytes, then closes both ways.
  for (auto [cid, sid] : streams) {
    std::string msg = "stream-" + std::to_string(cid) + "-" + std::to_string(sid);
    ASSERT_EQ(conns[cid]->client->Write(sid, Bytes(msg)), msg.size());
    ASSERT_TRUE(conns[cid]->client->CloseWrite(sid));
  }
  for (auto& [cid, p] : conns) p->Run();
  for (auto [cid, sid] : streams) {
    Pair& p = *conns[cid];
    EXPECT_EQ(p.sev.received[sid], "stream-" + std::to_string(cid) + "-" + std::to_string(sid));
    ASSERT_TRUE(p.server->CloseWrite(sid));
  }
  for (auto& [cid, p] : conns) p->Run();
  for (auto [cid, sid] : streams) {
    EXPECT_TRUE(conns[cid]->cev.closed.contains(sid));
    pool.Release(cid);
  }
  EXPECT_EQ(conns[first]->client->active_streams(), 0u);
  EXPECT_EQ(conns[first]->server->active_streams(), 0u);
  // Idle for 5 minutes: both are handed back for closing.
  now += absl::Minutes(4);
  EXPECT_TRUE(pool.CollectIdle().empty());
  now += absl::Minutes(1);
  EXPECT_EQ(pool.CollectIdle(), (std::vector<HbonePool::ConnId>{first, second}));
}

TEST_F(HboneConnTest, HalfCloseClientFirst) {
  Pair p(mesh_);
  StreamId id = p.Open();
  ASSERT_EQ(p.client->Write(id, Bytes("request")), 7u);
  ASSERT_TRUE(p.client->CloseWrite(id));
  EXPECT_FALSE(p.client->CloseWrite(id));
  EXPECT_EQ(p.client->Write(id, Bytes("late")), 0u);
  p.Run();
  EXPECT_EQ(p.sev.received[id], "request");
  EXPECT_TRUE(p.sev.half_closed.contains(id));
  EXPECT_TRUE(p.server->PeerClosed(id));
  // The other direction still works after the client's shutdown(SHUT_WR).
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(p.server->Write(id, Bytes("reply")), 5u);
    p.Run();
  }
  EXPECT_EQ(p.cev.received[id], "replyreplyreply");
  EXPECT_FALSE(p.cev.half_closed.contains(id));
  EXPECT_FALSE(p.cev.closed.contains(id));
  ASSERT_TRUE(p.server->CloseWrite(id));
  p.Run();
  EXPECT_TRUE(p.cev.half_closed.contains(id));
  EXPECT_TRUE(p.cev.closed.contains(id));
  EXPECT_TRUE(p.sev.closed.contains(id));
  EXPECT_TRUE(p.cev.resets.empty());
  EXPECT_TRUE(p.sev.resets.empty());
}

TEST_F(HboneConnTest, HalfCloseServerFirst) {
  Pair p(mesh_);
  StreamId id = p.Open();
  ASSERT_EQ(p.server->Write(id, Bytes("banner")), 6u);
  ASSERT_TRUE(p.server->CloseWrite(id));
  p.Run();
  EXPECT_EQ(p.cev.received[id], "banner");
  EXPECT_TRUE(p.cev.half_closed.contains(id));
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(p.client->Write(id, Bytes("more")), 4u);
    p.Run();
  }
  EXPECT_EQ(p.sev.received[id], "moremoremore");
  EXPECT_FALSE(p.sev.half_closed.contains(id));
  ASSERT_TRUE(p.client->CloseWrite(id));
  p.Run();
  EXPECT_TRUE(p.sev.half_closed.contains(id));
  EXPECT_TRUE(p.cev.closed.contains(id));
  EXPECT_TRUE(p.sev.closed.contains(id));
}

TEST_F(HboneConnTest, UnreadBytesKeepTheStreamUntilRead) {
  Pair p(mesh_);
  p.cev.auto_read = false;
  StreamId id = p.Open();
  ASSERT_EQ(p.server->Write(id, Bytes("tail")), 4u);
  ASSERT_TRUE(p.server->CloseWrite(id));
  ASSERT_TRUE(p.client->CloseWrite(id));
  p.Run();
  EXPECT_TRUE(p.cev.half_closed.contains(id));
  EXPECT_FALSE(p.cev.closed.contains(id));
  EXPECT_FALSE(p.client->PeerClosed(id));  // bytes first, then EOF, like TCP
  uint8_t buf[16];
  ASSERT_EQ(p.client->Read(id, buf), 4u);
  EXPECT_TRUE(p.cev.closed.contains(id));
  EXPECT_TRUE(p.client->PeerClosed(id));
}

TEST_F(HboneConnTest, AuthorityNotServedIs400) {
  Pair p(mesh_);
  StreamId id = p.Open(*SocketAddress::Parse("10.1.2.4:8080"));
  EXPECT_EQ(p.cev.refused[id], 400);
  EXPECT_TRUE(p.sev.connects.empty());
  EXPECT_EQ(p.server->counters().bad_request, 1u);
  EXPECT_FALSE(p.client->HasStream(id));
  // The connection is fine for the next stream.
  StreamId ok = p.Open();
  EXPECT_TRUE(p.cev.established.contains(ok));
}

TEST_F(HboneConnTest, PolicyDenialIs401) {
  HboneServerPolicy policy;
  std::optional<tls::SpiffeId> asked;
  policy.authorize = [&](const tls::SpiffeId& peer, const HboneConnectRequest&) {
    asked = peer;
    return false;
  };
  Pair p(mesh_, std::move(policy));
  StreamId id = p.Open();
  EXPECT_EQ(p.cev.refused[id], 401);
  EXPECT_EQ(asked, mesh_.client_id);
  EXPECT_TRUE(p.sev.connects.empty());
  EXPECT_EQ(p.server->counters().denied, 1u);
}

TEST_F(HboneConnTest, UpstreamFailureIs503) {
  Pair p(mesh_);
  std::vector<StreamId> pending;
  p.sev.on_connect = [&](StreamId id, const HboneInboundConnect&) { pending.push_back(id); };
  auto id = p.client->OpenStream(kTarget);
  ASSERT_TRUE(id.ok());
  p.Run();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_TRUE(p.cev.established.empty());  // no answer until the app connect finished
  EXPECT_EQ(p.client->Write(*id, Bytes("early")), 0u);
  // ... the connect to the app failed:
  ASSERT_TRUE(p.server->Refuse(pending[0], kStatusUpstreamFailed).ok());
  EXPECT_FALSE(p.server->Refuse(pending[0], kStatusUpstreamFailed).ok());
  p.Run();
  EXPECT_EQ(p.cev.refused[*id], 503);
  EXPECT_EQ(p.server->active_streams(), 0u);
  EXPECT_EQ(p.client->active_streams(), 0u);
}

TEST_F(HboneConnTest, WrongServerIdentityIsATypedFailure) {
  Pair p(mesh_, {}, {}, nullptr, Id("spiffe://cluster.local/ns/apps/sa/someone-else"));
  auto id = p.client->OpenStream(kTarget);
  ASSERT_TRUE(id.ok());
  p.Run();
  EXPECT_TRUE(p.client->failed());
  EXPECT_EQ(p.client->error(), HboneConnError::kTls);
  EXPECT_EQ(p.client->tls_error(), tls::TlsError::kSanMismatch);
  ASSERT_TRUE(p.cev.resets.contains(*id));
  EXPECT_EQ(p.cev.resets[*id].first, HboneStreamEnd::kConnectionFailed);
  EXPECT_EQ(p.cev.conn_errors, std::vector<HboneConnError>{HboneConnError::kTls});
  EXPECT_TRUE(p.sev.connects.empty());
  EXPECT_TRUE(p.client->Finished());
  EXPECT_FALSE(p.client->OpenStream(kTarget).ok());
}

TEST_F(HboneConnTest, ClientFromAnotherTrustDomainIsRefused) {
  auto stranger_id = Id("spiffe://other.example/ns/apps/sa/client");
  auto stranger = tls::testing::Issue(*mesh_.ca.ca, stranger_id);
  auto ctx = tls::testing::Ctx(tls::TlsRole::kClient, stranger, mesh_.roots);
  Pair p(mesh_, {}, {}, ctx);
  auto id = p.client->OpenStream(kTarget);
  ASSERT_TRUE(id.ok());
  p.Run();
  EXPECT_EQ(p.server->error(), HboneConnError::kTls);
  EXPECT_EQ(p.server->tls_error(), tls::TlsError::kWrongTrustDomain);
  EXPECT_TRUE(p.client->failed());
  EXPECT_TRUE(p.cev.resets.contains(*id));
  EXPECT_TRUE(p.sev.connects.empty());
  EXPECT_TRUE(p.server->Finished());
}

TEST_F(HboneConnTest, GoawayLetsExistingStreamsFinishAndRefusesNewOnes) {
  Pair p(mesh_);
  StreamId id = p.Open();
  ASSERT_TRUE(p.cev.established.contains(id));
  p.server->Goaway();
  p.Run();
  EXPECT_EQ(p.cev.goaways, 1);
  EXPECT_TRUE(p.client->draining());
  EXPECT_EQ(p.client->OpenStream(kTarget).status().code(), absl::StatusCode::kFailedPrecondition);
  // The stream in flight still works both ways.
  ASSERT_EQ(p.client->Write(id, Bytes("still")), 5u);
  ASSERT_EQ(p.server->Write(id, Bytes("here")), 4u);
  p.Run();
  EXPECT_EQ(p.sev.received[id], "still");
  EXPECT_EQ(p.cev.received[id], "here");
  EXPECT_FALSE(p.client->Finished());
  ASSERT_TRUE(p.client->CloseWrite(id));
  ASSERT_TRUE(p.server->CloseWrite(id));
  p.Run();
  EXPECT_TRUE(p.cev.closed.contains(id));
  EXPECT_TRUE(p.sev.closed.contains(id));
  // Then both ends finish cleanly (TLS close_notify both ways).
  EXPECT_TRUE(p.client->Finished());
  EXPECT_TRUE(p.server->Finished());
  EXPECT_FALSE(p.client->failed());
  EXPECT_FALSE(p.server->failed());
}

TEST_F(HboneConnTest, StreamsOpenedAfterTheServersGoawayAreRefusedForRetry) {
  Pair p(mesh_);
  StreamId first = p.Open();
  // The server goes away while a second CONNECT is in flight.
  p.server->Goaway();
  auto second = p.client->OpenStream(kTarget);
  ASSERT_TRUE(second.ok());
  p.Run();
  EXPECT_TRUE(p.cev.established.contains(first));
  ASSERT_TRUE(p.cev.resets.contains(*second));
  EXPECT_EQ(p.cev.resets[*second].first, HboneStreamEnd::kRefusedByGoaway);
  EXPECT_EQ(p.sev.connects.size(), 1u);
}

TEST_F(HboneConnTest, ResetReachesThePeer) {
  Pair p(mesh_);
  StreamId id = p.Open();
  p.client->Reset(id);
  EXPECT_FALSE(p.client->HasStream(id));
  p.Run();
  ASSERT_TRUE(p.sev.resets.contains(id));
  EXPECT_EQ(p.sev.resets[id].first, HboneStreamEnd::kReset);
  EXPECT_FALSE(p.server->HasStream(id));
}

TEST_F(HboneConnTest, PlaintextHttp2PrefaceIsATypedFailure) {
  Recorder ev;
  HboneServerPolicy policy;
  policy.serves = [](const SocketAddress&) { return true; };
  auto server = HboneServerConn::Create(mesh_.server_ctx, "cluster.local", policy, &ev);
  ASSERT_TRUE(server.ok());
  // The preface and an empty SETTINGS frame, as a cleartext h2c client sends them.
  std::string preface("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", 33);
  (*server)->FeedWire(Bytes(preface));
  EXPECT_TRUE((*server)->failed());
  EXPECT_EQ((*server)->error(), HboneConnError::kTls);
  EXPECT_EQ((*server)->tls_error(), tls::TlsError::kProtocolError);
  EXPECT_TRUE(ev.connects.empty());
  EXPECT_EQ(ev.conn_errors, std::vector<HboneConnError>{HboneConnError::kTls});
  std::vector<uint8_t> out(4096);
  while ((*server)->TakeWire(out) > 0) {
  }
  EXPECT_TRUE((*server)->Finished());
  EXPECT_EQ((*server)->FeedWire(Bytes(preface)), 0u);
  EXPECT_EQ((*server)->Buffered().receive, 0u);
}

TEST_F(HboneConnTest, EofMidStreamFailsTheStreams) {
  Pair p(mesh_);
  StreamId id = p.Open();
  p.client->FeedEof();
  EXPECT_EQ(p.client->error(), HboneConnError::kPeerClosed);
  EXPECT_EQ(p.cev.resets[id].first, HboneStreamEnd::kConnectionFailed);
  std::vector<uint8_t> out(4096);
  while (p.client->TakeWire(out) > 0) {
  }
  EXPECT_TRUE(p.client->Finished());
}

}  // namespace
}  // namespace ringmesh::proxy::hbone
