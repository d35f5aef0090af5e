#include "userspace/proxy/tls/tls_session.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "tests/proxy/tls/tls_test_util.h"

namespace ringmesh::proxy::tls {
namespace {

using testing::Ctx;
using testing::Id;
using testing::Issue;
using testing::Pump;
using testing::RawCtx;
using testing::RawPeer;
using testing::Roots;
using testing::Side;

class TlsSessionTest : public ::testing::Test {
 protected:
  TlsSessionTest()
      : mesh_(testing::MakeCa("mesh")),
        client_id_(Id("spiffe://cluster.local/ns/apps/sa/client")),
        server_id_(Id("spiffe://cluster.local/ns/apps/sa/server")),
        client_(Issue(*mesh_.ca, client_id_)),
        server_(Issue(*mesh_.ca, server_id_)),
        roots_(Roots({mesh_.pem.root_pem})) {}

  std::unique_ptr<TlsSession> NewClient(std::shared_ptr<SSL_CTX> ctx, const SpiffeId& expected,
                                        TlsSession::Limits limits = {}) {
    auto s = TlsSession::Client(ctx, expected, limits);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }
  std::unique_ptr<TlsSession> NewServer(std::shared_ptr<SSL_CTX> ctx, TlsSession::Limits limits = {}) {
    auto s = TlsSession::Server(ctx, "cluster.local", limits);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }
  std::unique_ptr<TlsSession> GoodClient() {
    return NewClient(Ctx(TlsRole::kClient, client_, roots_), server_id_);
  }
  std::unique_ptr<TlsSession> GoodServer() { return NewServer(Ctx(TlsRole::kServer, server_, roots_)); }

  // Handshakes two sessions in memory; returns whether both completed.
  static bool Connect(TlsSession& c, TlsSession& s) {
    Side a{&c}, b{&s};
    Pump(a, b);
    return c.handshake_done() && s.handshake_done() && !c.failed() && !s.failed();
  }

  testing::TestCa mesh_;
  SpiffeId client_id_, server_id_;
  testing::Identity client_, server_;
  TrustBundle::StorePtr roots_;
};

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (auto& ch : out) ch = static_cast<char>(rng());
  return out;
}

TEST_F(TlsSessionTest, HandshakeReportsPeersAndMoves8MiBEachWay) {
  auto c = GoodClient();
  auto s = GoodServer();
  Side a{c.get(), RandomBytes(8 << 20, 1)};
  Side b{s.get(), RandomBytes(8 << 20, 2)};
  Pump(a, b);
  ASSERT_TRUE(c->handshake_done()) << TlsErrorName(c->error()) << " " << c->error_detail();
  ASSERT_TRUE(s->handshake_done()) << TlsErrorName(s->error()) << " " << s->error_detail();
  ASSERT_TRUE(c->peer_id().has_value());
  ASSERT_TRUE(s->peer_id().has_value());
  EXPECT_EQ(*c->peer_id(), server_id_);
  EXPECT_EQ(*s->peer_id(), client_id_);
  EXPECT_EQ(b.received.size(), a.to_send.size());
  EXPECT_TRUE(b.received == a.to_send);
  EXPECT_EQ(a.received.size(), b.to_send.size());
  EXPECT_TRUE(a.received == b.to_send);
  EXPECT_FALSE(c->failed());
  EXPECT_FALSE(s->failed());
}

TEST_F(TlsSessionTest, ClientHelloHasNoSni) {
  auto c = GoodClient();
  std::vector<uint8_t> hello(c->PendingWire());
  ASSERT_GT(hello.size(), 0u);
  ASSERT_EQ(c->TakeWire(hello), hello.size());
  // Feed it to a raw server and ask OpenSSL what name it saw.
  auto raw = RawCtx(TlsRole::kServer, RawPeer{&server_});
  SslPtr ssl(SSL_new(raw.get()));
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), rbio, wbio);
  SSL_set_accept_state(ssl.get());
  BIO_write(rbio, hello.data(), static_cast<int>(hello.size()));
  SSL_do_handshake(ssl.get());
  EXPECT_EQ(SSL_get_servername(ssl.get(), TLSEXT_NAMETYPE_host_name), nullptr);
  EXPECT_EQ(SSL_version(ssl.get()), TLS1_3_VERSION);
  ERR_clear_error();
}

TEST_F(TlsSessionTest, ServerRefusesClientFromUnknownCa) {
  auto other = testing::MakeCa("other");
  auto stranger = Issue(*other.ca, client_id_);
  auto c = NewClient(Ctx(TlsRole::kClient, stranger, roots_), server_id_);
  auto s = GoodServer();
  EXPECT_FALSE(Connect(*c, *s));
  EXPECT_EQ(s->error(), TlsError::kUnknownCa) << TlsErrorName(s->error());
  EXPECT_EQ(c->error(), TlsError::kPeerRejected) << TlsErrorName(c->error());
  EXPECT_FALSE(s->peer_id().has_value());
}

TEST_F(TlsSessionTest, ServerRefusesTrustedClientOfAnotherTrustDomain) {
  auto other = testing::MakeCa("other");
  auto foreign = Issue(*other.ca, Id("spiffe://other.domain/ns/apps/sa/client"));
  auto both = Roots({mesh_.pem.root_pem, other.pem.root_pem});
  auto c = NewClient(Ctx(TlsRole::kClient, foreign, both), server_id_);
  auto s = NewServer(Ctx(TlsRole::kServer, server_, both));
  EXPECT_FALSE(Connect(*c, *s));
  EXPECT_EQ(s->error(), TlsError::kWrongTrustDomain) << TlsErrorName(s->error());
}

TEST_F(TlsSessionTest, ClientRefusesExpiredServer) {
  LocalCa::Options past;
  past.clock = [] { return absl::Now() - absl::Hours(2); };
  auto old = testing::MakeCa("mesh-past", std::move(past));
  auto expired = Issue(*old.ca, server_id_, absl::Hours(1));  // ended an hour ago
  auto both = Roots({mesh_.pem.root_pem, old.pem.root_pem});
  auto c = NewClient(Ctx(TlsRole::kClient, client_, both), server_id_);
  auto s = NewServer(Ctx(TlsRole::kServer, expired, both));
  EXPECT_FALSE(Connect(*c, *s));
  EXPECT_EQ(c->error(), TlsError::kExpired) << TlsErrorName(c->error());
  EXPECT_EQ(s->error(), TlsError::kPeerRejected) << TlsErrorName(s->error());
}

TEST_F(TlsSessionTest, ClientRefusesServerWithOtherIdentity) {
  auto c =
      NewClient(Ctx(TlsRole::kClient, client_, roots_), Id("spiffe://cluster.local/ns/apps/sa/database"));
  auto s = GoodServer();
  EXPECT_FALSE(Connect(*c, *s));
  EXPECT_EQ(c->error(), TlsError::kSanMismatch) << TlsErrorName(c->error());
  EXPECT_FALSE(c->peer_id().has_value());
}

// A leaf signed by the mesh's issuing CA with any SAN (OpenSSL config
// syntax, empty for none): a trusted chain alone is not an identity.
testing::Identity HandMadeLeaf(const TestCaMaterial& m, const std::string& san, bool is_ca = false) {
  auto key = MakeP256Key();
  auto ca_certs = ParsePemCertificates(m.ca_cert_pem, 1);
  auto ca_key = ParsePemPrivateKey(m.ca_key_pem);
  EXPECT_TRUE(key.ok() && ca_certs.ok() && ca_key.ok());
  X509* ca = ca_certs->at(0).get();
  X509Ptr leaf(X509_new());
  X509_set_version(leaf.get(), X509_VERSION_3);
  EXPECT_TRUE(SetRandomSerial(leaf.get()).ok());
  X509_set_issuer_name(leaf.get(), X509_get_subject_name(ca));
  X509_set_pubkey(leaf.get(), key->get());
  EXPECT_TRUE(SetValidity(leaf.get(), absl::Now() - absl::Minutes(1), absl::Now() + absl::Hours(1)).ok());
  EXPECT_TRUE(
      AddExtension(leaf.get(), ca, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE")
          .ok());
  EXPECT_TRUE(AddExtension(leaf.get(), ca, NID_key_usage,
                           is_ca ? "critical,digitalSignature,keyCertSign" : "critical,digitalSignature")
                  .ok());
  EXPECT_TRUE(AddExtension(leaf.get(), ca, NID_ext_key_usage, "serverAuth,clientAuth").ok());
  EXPECT_TRUE(AddExtension(leaf.get(), ca, NID_authority_key_identifier, "keyid:always").ok());
  if (!san.empty()) {
    EXPECT_TRUE(AddExtension(leaf.get(), ca, NID_subject_alt_name, san.c_str()).ok());
  }
  EXPECT_GT(X509_sign(leaf.get(), ca_key->get(), EVP_sha256()), 0);
  testing::Identity out{*std::move(key)};
  out.cert.leaf = std::move(leaf);
  out.cert.chain.push_back(UpRef(ca));
  return out;
}

TEST_F(TlsSessionTest, ClientRefusesServerWithoutOneSpiffeUri) {
  const std::string good = "URI:spiffe://cluster.local/ns/apps/sa/server";
  {
    // The helper itself makes acceptable leaves.
    auto c = GoodClient();
    auto s = NewServer(Ctx(TlsRole::kServer, HandMadeLeaf(mesh_.pem, good), roots_));
    EXPECT_TRUE(Connect(*c, *s)) << TlsErrorName(c->error());
  }
  struct Case {
    std::string san;
    bool is_ca;
  };
  for (const Case& bad : {Case{good + ",URI:spiffe://cluster.local/ns/apps/sa/other", false},
                          Case{good + "," + good, false}, Case{"DNS:server.apps.svc", false},
                          Case{"URI:https://server.apps/", false}, Case{"", false}, Case{good, true}}) {
    auto c = GoodClient();
    auto s = NewServer(Ctx(TlsRole::kServer, HandMadeLeaf(mesh_.pem, bad.san, bad.is_ca), roots_));
    EXPECT_FALSE(Connect(*c, *s)) << bad.san;
    EXPECT_EQ(c->error(), TlsError::kBadIdentity)
        << bad.san << " ca=" << bad.is_ca << ": " << TlsErrorName(c->error());
  }
}

TEST_F(TlsSessionTest, ServerRefusesClientWithoutCertificate) {
  auto c = NewClient(RawCtx(TlsRole::kClient, RawPeer{nullptr}), server_id_);
  auto s = GoodServer();
  EXPECT_FALSE(Connect(*c, *s));
  EXPECT_EQ(s->error(), TlsError::kNoPeerCertificate) << TlsErrorName(s->error());
}

TEST_F(TlsSessionTest, ServerRefusesClientWithoutH2) {
  for (std::string alpn : {std::string(), std::string("\x08http/1.1")}) {
    auto c = NewClient(RawCtx(TlsRole::kClient, RawPeer{&client_, TLS1_3_VERSION, TLS1_3_VERSION, alpn}),
                       server_id_);
    auto s = GoodServer();
    EXPECT_FALSE(Connect(*c, *s));
    EXPECT_EQ(s->error(), TlsError::kNoAlpn) << TlsErrorName(s->error()) << " alpn=" << alpn;
  }
}

TEST_F(TlsSessionTest, ClientRefusesServerThatIgnoresAlpn) {
  RawPeer peer{&server_, TLS1_3_VERSION, TLS1_3_VERSION};
  auto raw = RawCtx(TlsRole::kServer, peer);
  SSL_CTX_set_alpn_select_cb(raw.get(), nullptr, nullptr);  // selects nothing
  auto c = GoodClient();
  auto s = NewServer(raw);
  EXPECT_FALSE(Connect(*c, *s));
  EXPECT_EQ(c->error(), TlsError::kNoAlpn) << TlsErrorName(c->error());
}

TEST_F(TlsSessionTest, Tls12OnlyPeersAreRefusedBothWays) {
  {
    auto c =
        NewClient(RawCtx(TlsRole::kClient, RawPeer{&client_, TLS1_2_VERSION, TLS1_2_VERSION}), server_id_);
    auto s = GoodServer();
    EXPECT_FALSE(Connect(*c, *s));
    EXPECT_EQ(s->error(), TlsError::kNotTls13) << TlsErrorName(s->error());
  }
  {
    auto c = GoodClient();
    auto s = NewServer(RawCtx(TlsRole::kServer, RawPeer{&server_, TLS1_2_VERSION, TLS1_2_VERSION}));
    EXPECT_FALSE(Connect(*c, *s));
    EXPECT_EQ(c->error(), TlsError::kNotTls13) << TlsErrorName(c->error()) << " " << c->error_detail();
  }
}

TEST_F(TlsSessionTest, GarbageIsAProtocolError) {
  auto s = GoodServer();
  const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  s->Feed({reinterpret_cast<const uint8_t*>(junk.data()), junk.size()});
  EXPECT_TRUE(s->failed());
  EXPECT_EQ(s->error(), TlsError::kProtocolError) << TlsErrorName(s->error());
  EXPECT_EQ(s->Feed({reinterpret_cast<const uint8_t*>(junk.data()), junk.size()}), 0u);
}

TEST_F(TlsSessionTest, WireAndInputAreBounded) {
  TlsSession::Limits limits;
  limits.max_pending_wire = 32 * 1024;
  limits.max_pending_input = 20 * 1024;
  auto c = NewClient(Ctx(TlsRole::kClient, client_, roots_), server_id_, limits);
  auto s = NewServer(Ctx(TlsRole::kServer, server_, roots_), limits);
  ASSERT_TRUE(Connect(*c, *s));
  // Nobody takes the client's wire: Write stops accepting near the bound.
  const std::string big = RandomBytes(1 << 20, 3);
  size_t accepted = 0;
  while (size_t n =
             c->Write({reinterpret_cast<const uint8_t*>(big.data()) + accepted, big.size() - accepted})) {
    accepted += n;
  }
  EXPECT_LT(accepted, big.size());
  EXPECT_GE(c->PendingWire(), limits.max_pending_wire);
  EXPECT_LE(c->PendingWire(), limits.max_pending_wire + 1024);
  // The server is fed but never Reads: Feed stops accepting at its bound.
  std::vector<uint8_t> wire(c->PendingWire());
  c->TakeWire(wire);
  size_t fed = s->Feed(wire);
  EXPECT_EQ(fed, limits.max_pending_input);
  EXPECT_EQ(s->Feed(std::span<const uint8_t>(wire).subspan(fed)), 0u);
  EXPECT_FALSE(s->failed());
}

TEST_F(TlsSessionTest, CloseNotifyVersusTruncation) {
  auto c = GoodClient();
  auto s = GoodServer();
  ASSERT_TRUE(Connect(*c, *s));
  Side a{c.get(), "last words"}, b{s.get()};
  c->Shutdown();
  Pump(a, b);
  EXPECT_EQ(a.sent, 0u);  // nothing accepted after Shutdown
  EXPECT_TRUE(s->peer_closed());
  EXPECT_FALSE(s->failed());

  auto c2 = GoodClient();
  auto s2 = GoodServer();
  ASSERT_TRUE(Connect(*c2, *s2));
  s2->FeedEof();
  uint8_t buf[16];
  EXPECT_EQ(s2->Read(buf), 0u);
  EXPECT_EQ(s2->error(), TlsError::kPeerClosed) << TlsErrorName(s2->error());
}

TEST(TlsErrorName, EveryReasonHasADistinctName) {
  std::set<std::string> names;
  for (int e = 0; e <= static_cast<int>(TlsError::kPeerClosed); ++e) {
    names.insert(TlsErrorName(static_cast<TlsError>(e)));
  }
  EXPECT_EQ(names.size(), static_cast<size_t>(TlsError::kPeerClosed) + 1);
  EXPECT_EQ(names.count("unknown"), 0u);
}

}  // namespace
}  // namespace ringmesh::proxy::tls
