// Helpers for the TLS tests: throwaway CAs, identities issued by them,
// contexts, deliberately misconfigured peers, an in-memory pump that
// moves ciphertext between two TlsSessions (honouring their bounds), and a
// temp dir for tests that read PEM files.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "userspace/proxy/tls/local_ca.h"
#include "userspace/proxy/tls/test_ca.h"
#include "userspace/proxy/tls/tls_session.h"
#include "userspace/proxy/tls/trust_bundle.h"
#include "userspace/proxy/tls/x509_util.h"

namespace ringmesh::proxy::tls::testing {

inline SpiffeId Id(const std::string& uri) {
  auto id = SpiffeId::Parse(uri);
  EXPECT_TRUE(id.ok()) << uri;
  return *id;
}

struct TestCa {
  TestCaMaterial pem;
  std::unique_ptr<LocalCa> ca;
};

// A root + intermediate; the LocalCa issues any identity unless told.
inline TestCa MakeCa(const std::string& name, LocalCa::Options options = {}) {
  if (!options.allowed) options.allowed = [](const SpiffeId&) { return true; };
  auto material = MakeTestCaForTesting(name);
  EXPECT_TRUE(material.ok()) << material.status();
  auto ca =
      LocalCa::FromPem(material->ca_cert_pem, material->ca_key_pem, material->chain_pem, std::move(options));
  EXPECT_TRUE(ca.ok()) << ca.status();
  return TestCa{*std::move(material), *std::move(ca)};
}

inline TrustBundle::StorePtr Roots(const std::vector<std::string>& pems) {
  std::string all;
  for (const auto& p : pems) all += p;
  TrustBundle bundle;
  EXPECT_TRUE(bundle.LoadPem(all).ok());
  return bundle.Store();
}

struct Identity {
  EvpPkeyPtr key;
  IssuedCertificate cert;
};

inline Identity Issue(LocalCa& ca, const SpiffeId& id, absl::Duration ttl = absl::Hours(1)) {
  auto key = MakeP256Key();
  EXPECT_TRUE(key.ok());
  auto cert = ca.Issue(id, key->get(), ttl);
  EXPECT_TRUE(cert.ok()) << cert.status();
  return Identity{*std::move(key), *std::move(cert)};
}

inline std::shared_ptr<SSL_CTX> Ctx(TlsRole role, const Identity& who, TrustBundle::StorePtr roots) {
  auto ctx = MakeTlsContext(role, who.key.get(), who.cert.leaf.get(), who.cert.chain, std::move(roots));
  EXPECT_TRUE(ctx.ok()) << ctx.status();
  return *ctx;
}

// A peer built without our rules, to provoke each refusal. It does not
// verify what it is shown.
struct RawPeer {
  const Identity* who = nullptr;  // no certificate when null
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  std::string alpn = std::string("\x02h2", 3);  // wire format; empty sends none
};
inline std::shared_ptr<SSL_CTX> RawCtx(TlsRole role, const RawPeer& p) {
  SSL_CTX* c = SSL_CTX_new(role == TlsRole::kClient ? TLS_client_method() : TLS_server_method());
  std::shared_ptr<SSL_CTX> ctx(c, SSL_CTX_free);
  SSL_CTX_set_min_proto_version(c, p.min_version);
  SSL_CTX_set_max_proto_version(c, p.max_version);
  SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
  if (p.who) {
    EXPECT_EQ(SSL_CTX_use_certificate(c, p.who->cert.leaf.get()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey(c, p.who->key.get()), 1);
    for (const auto& x : p.who->cert.chain) SSL_CTX_add1_chain_cert(c, x.get());
  }
  if (role == TlsRole::kClient && !p.alpn.empty()) {
    SSL_CTX_set_alpn_protos(c, reinterpret_cast<const unsigned char*>(p.alpn.data()), p.alpn.size());
  }
  if (role == TlsRole::kServer) {
    SSL_CTX_set_alpn_select_cb(
        c,
        [](SSL*, const unsigned char** out, unsigned char* out_len, const unsigned char* in,
           unsigned int in_len, void*) {
          if (in_len < 1 || in[0] + 1u > in_len) return SSL_TLSEXT_ERR_NOACK;
          *out = in + 1;
          *out_len = in[0];
          return SSL_TLSEXT_ERR_OK;
        },
        nullptr);
  }
  return ctx;
}

// A directory under the system temp dir, unique per process and instance,
// removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir()
      : path_(std::filesystem::temp_directory_path() /
              ("ringmesh_tls_" + std::to_string(getpid()) + "_" + std::to_string(counter_++))) {
    std::filesystem::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  // Writes `text` to `name` inside the directory (replacing it) and returns its path.
  std::string Write(const std::string& name, const std::string& text) {
    const auto p = path_ / name;
    std::ofstream(p, std::ios::trunc) << text;
    return p.string();
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// One side of an in-memory connection.
struct Side {
  TlsSession* s = nullptr;
  std::string to_send;
  size_t sent = 0;
  std::string received;
  std::vector<uint8_t> inbound;  // ciphertext taken from the peer, not yet fed
};

// Moves bytes both ways until nothing moves. Returns the number of rounds.
inline int Pump(Side& a, Side& b, int max_rounds = 1 << 20) {
  std::vector<uint8_t> buf(64 * 1024);
  int rounds = 0;
  for (; rounds < max_rounds; ++rounds) {
    bool progress = false;
    for (auto [me, peer] : {std::pair<Side*, Side*>{&a, &b}, {&b, &a}}) {
      if (me->sent < me->to_send.size()) {
        size_t n = me->s->Write(
            {reinterpret_cast<const uint8_t*>(me->to_send.data()) + me->sent, me->to_send.size() - me->sent});
        me->sent += n;
        progress |= n > 0;
      }
      if (peer->inbound.empty()) {
        size_t n = me->s->TakeWire(buf);
        peer->inbound.assign(buf.begin(), buf.begin() + static_cast<long>(n));
        progress |= n > 0;
      }
      if (!peer->inbound.empty()) {
        size_t n = peer->s->Feed(peer->inbound);
        peer->inbound.erase(peer->inbound.begin(), peer->inbound.begin() + static_cast<long>(n));
        progress |= n > 0;
      }
      while (size_t n = peer->s->Read(buf)) {
        peer->received.append(reinterpret_cast<const char*>(buf.data()), n);
        progress = true;
      }
    }
    if (!progress) break;
  }
  return rounds;
}

}  // namespace ringmesh::proxy::tls::testing
