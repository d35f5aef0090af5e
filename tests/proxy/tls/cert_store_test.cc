#include "userspace/proxy/tls/cert_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/proxy/tls/tls_test_util.h"

namespace ringmesh::proxy::tls {
namespace {

using testing::Id;
using testing::Pump;
using testing::Side;
using testing::TempDir;

const SpiffeId kA{"cluster.local", "apps", "a"};
const SpiffeId kB{"cluster.local", "apps", "b"};

TEST(CertStore, IssuesOnFirstUseAndBoundsIdentities) {
  LocalCa::Options only_ab;
  only_ab.allowed = [](const SpiffeId& id) { return id == kA || id == kB; };
  auto mesh = testing::MakeCa("mesh", std::move(only_ab));
  TrustBundle bundle;
  ASSERT_TRUE(bundle.LoadPem(mesh.pem.root_pem).ok());
  CertStore::Options options;
  options.max_identities = 1;
  CertStore store(*mesh.ca, bundle, options);

  auto a1 = store.Get(kA);
  ASSERT_TRUE(a1.ok()) << a1.status();
  EXPECT_EQ((*a1)->id, kA);
  EXPECT_TRUE(IsP256Key((*a1)->key.get()));
  EXPECT_EQ(*SpiffeIdOfCertificate((*a1)->cert.leaf.get()), kA);
  auto a2 = store.Get(kA);
  ASSERT_TRUE(a2.ok());
  EXPECT_EQ(a1->get(), a2->get());  // cached, not reissued
  EXPECT_EQ(store.Get(kB).status().code(), absl::StatusCode::kResourceExhausted);
  store.Remove(kA);
  EXPECT_EQ(store.size(), 0u);
  EXPECT_TRUE(store.Get(kB).ok());
  store.Remove(kB);
  // The issuer's refusal reaches the caller; nothing is stored.
  EXPECT_EQ(store.Get(Id("spiffe://cluster.local/ns/apps/sa/c")).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store.size(), 0u);
}

TEST(CertStore, RenewalAtHalfLifeIsHitless) {
  auto mesh = testing::MakeCa("mesh");
  TrustBundle bundle;
  ASSERT_TRUE(bundle.LoadPem(mesh.pem.root_pem).ok());
  CertStore::Options options;
  options.ttl = absl::Hours(1);
  CertStore store(*mesh.ca, bundle, options);
  auto client = store.Get(kA);
  auto server = store.Get(kB);
  ASSERT_TRUE(client.ok() && server.ok());

  auto c = TlsSession::Client((*client)->client_ctx, kB);
  auto s = TlsSession::Server((*server)->server_ctx, "cluster.local");
  ASSERT_TRUE(c.ok() && s.ok());
  Side a{c->get(), "before renewal"}, b{s->get()};
  Pump(a, b);
  ASSERT_EQ(b.received, "before renewal");

  const absl::Time now = absl::Now();
  EXPECT_TRUE(store.RenewDue(now).renewed.empty());
  auto result = store.RenewDue(now + absl::Minutes(31));
  EXPECT_EQ(result.renewed.size(), 2u);
  EXPECT_TRUE(result.failed.empty());
  auto renewed = store.Get(kA);
  ASSERT_TRUE(renewed.ok());
  EXPECT_NE((*renewed)->cert.serial_hex, (*client)->cert.serial_hex);
  EXPECT_NE((*renewed)->client_ctx.get(), (*client)->client_ctx.get());
  EXPECT_NE(EVP_PKEY_eq((*renewed)->key.get(), (*client)->key.get()), 1);  // a new key too

  // The open session goes on with its old credentials, both ways.
  a.to_send += " and after";
  b.to_send = "reply";
  client->reset();  // even with the store's old credential gone
  Pump(a, b);
  EXPECT_EQ(b.received, "before renewal and after");
  EXPECT_EQ(a.received, "reply");
  EXPECT_FALSE((*c)->failed());
  EXPECT_FALSE((*s)->failed());

  // New sessions use the new certificate.
  auto fresh_server = store.Get(kB);
  auto c2 = TlsSession::Client((*renewed)->client_ctx, kB);
  auto s2 = TlsSession::Server((*fresh_server)->server_ctx, "cluster.local");
  Side a2{c2->get()}, b2{s2->get()};
  Pump(a2, b2);
  ASSERT_TRUE((*c2)->handshake_done() && (*s2)->handshake_done());
  EXPECT_EQ(*(*s2)->peer_id(), kA);
}

// A connection from `client_ctx` to a server presenting `server_ctx`.
TlsError Dial(const std::shared_ptr<SSL_CTX>& client_ctx, const std::shared_ptr<SSL_CTX>& server_ctx) {
  auto c = TlsSession::Client(client_ctx, kB);
  auto s = TlsSession::Server(server_ctx, "cluster.local");
  Side a{c->get()}, b{s->get()};
  Pump(a, b);
  return (*c)->handshake_done() && !(*c)->failed() ? TlsError::kNone : (*c)->error();
}

TEST(CertStore, ContextsMadeAfterABundleReloadTrustTheNewRoots) {
  auto old_ca = testing::MakeCa("old");
  auto new_ca = testing::MakeCa("new");
  TempDir dir;
  const std::string path = dir.Write("roots.pem", old_ca.pem.root_pem + new_ca.pem.root_pem);
  TrustBundle bundle;
  ASSERT_TRUE(bundle.LoadFile(path).ok());
  EXPECT_EQ(bundle.size(), 2u);

  CertStore store(*new_ca.ca, bundle);
  auto before = store.Get(kA);
  ASSERT_TRUE(before.ok());
  // A server with a certificate from the old CA (outside the store).
  auto old_server = testing::Issue(*old_ca.ca, kB);
  auto old_server_ctx = testing::Ctx(TlsRole::kServer, old_server, bundle.Store());
  EXPECT_EQ(Dial((*before)->client_ctx, old_server_ctx), TlsError::kNone);

  // Unchanged file: nothing to do, even when touched.
  EXPECT_EQ(bundle.ReloadIfChanged().value_or(true), false);
  dir.Write("roots.pem", old_ca.pem.root_pem + new_ca.pem.root_pem);
  EXPECT_EQ(bundle.ReloadIfChanged().value_or(true), false);

  dir.Write("roots.pem", new_ca.pem.root_pem);
  auto changed = bundle.ReloadIfChanged();
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_TRUE(*changed);
  EXPECT_EQ(bundle.size(), 1u);
  auto after = store.Get(kA);
  ASSERT_TRUE(after.ok());
  EXPECT_NE((*after)->client_ctx.get(), (*before)->client_ctx.get());
  EXPECT_EQ((*after)->cert.serial_hex, (*before)->cert.serial_hex);  // same certificate, new roots
  EXPECT_EQ(Dial((*after)->client_ctx, old_server_ctx), TlsError::kUnknownCa);
  EXPECT_EQ(Dial((*before)->client_ctx, old_server_ctx), TlsError::kNone);  // old context unchanged

  // A broken file keeps the last good roots.
  dir.Write("roots.pem", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n");
  EXPECT_FALSE(bundle.ReloadIfChanged().ok());
  EXPECT_EQ(bundle.size(), 1u);
  EXPECT_EQ(store.Get(kA)->get(), after->get());
}

TEST(CertStore, ConcurrentGetRenewAndReload) {
  auto mesh = testing::MakeCa("mesh");
  TrustBundle bundle;
  ASSERT_TRUE(bundle.LoadPem(mesh.pem.root_pem).ok());
  CertStore store(*mesh.ca, bundle);
  std::vector<SpiffeId> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(SpiffeId{"cluster.local", "apps", "sa" + std::to_string(i)});
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        const SpiffeId& id = ids[(i + t) % ids.size()];
        auto cred = store.Get(id);
        if (!cred.ok() || (*cred)->id != id || *SpiffeIdOfCertificate((*cred)->cert.leaf.get()) != id ||
            !(*cred)->client_ctx || !(*cred)->server_ctx) {
          ++wrong;
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 5; ++i) {
      store.RenewDue(absl::Now() + absl::Hours(24));
      if (!bundle.LoadPem(mesh.pem.root_pem).ok()) ++wrong;
    }
  });
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(store.size(), ids.size());
}

TEST(TrustBundle, Bounds) {
  auto a = testing::MakeCa("a");
  auto b = testing::MakeCa("b");
  TrustBundle::Limits limits;
  limits.max_roots = 1;
  TrustBundle bundle(limits);
  EXPECT_FALSE(bundle.LoadPem(a.pem.root_pem + b.pem.root_pem).ok());
  EXPECT_TRUE(bundle.LoadPem(a.pem.root_pem).ok());
  EXPECT_FALSE(bundle.LoadPem("").ok());  // no roots is a mistake, not "trust nothing"
  EXPECT_EQ(bundle.size(), 1u);
  limits.max_roots = 8;
  limits.max_file_bytes = 100;
  TrustBundle small(limits);
  TempDir dir;
  EXPECT_EQ(small.LoadFile(dir.Write("big.pem", a.pem.root_pem)).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(small.ReloadIfChanged().ok());  // never loaded from a file
}

}  // namespace
}  // namespace ringmesh::proxy::tls
