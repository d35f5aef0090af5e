#include "userspace/proxy/tls/workload_identities.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/proxy/tls/tls_test_util.h"
#include "userspace/proxy/tls/test_ca.h"
#include "userspace/proxy/tls/tls_session.h"

namespace ringmesh::proxy::tls {
namespace {

using testing::Pump;
using testing::Side;
using testing::TempDir;

Pod MakePod(const std::string& ns, const std::string& name, const std::string& sa) {
  Pod p;
  p.ns = ns;
  p.name = name;
  p.service_account = sa;
  return p;
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

class WorkloadIdentitiesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = MakeTestCaForTesting("wid-root");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *ca;
    options_.ca_cert_path = dir_.Write("ca.pem", ca_.ca_cert_pem);
    options_.ca_key_path = dir_.Write("ca-key.pem", ca_.ca_key_pem);
    options_.ca_chain_path = dir_.Write("chain.pem", ca_.chain_pem);
    options_.trust_bundle_path = dir_.Write("roots.pem", ca_.root_pem);
    options_.tick = absl::Milliseconds(20);
  }
  const IdentityView* Find(const std::vector<IdentityView>& views, const std::string& id) {
    for (const auto& v : views) {
      if (v.id == id) return &v;
    }
    return nullptr;
  }

  TempDir dir_;
  TestCaMaterial ca_;
  WorkloadIdentityOptions options_;
};

TEST_F(WorkloadIdentitiesTest, IssuesOneCertificatePerIdentityOfTheNodesPods) {
  auto ids = WorkloadIdentities::Start(options_);
  ASSERT_TRUE(ids.ok()) << ids.status();
  Pod web1 = MakePod("shop", "web-1", "web"), web2 = MakePod("shop", "web-2", "web");
  Pod db = MakePod("shop", "db-0", "");  // no service account: "default"
  Pod off = MakePod("shop", "batch", "batch");
  off.enrolled = false;
  (*ids)->SetWorkloads({web1, web2, db, off});
  const SpiffeId web{"cluster.local", "shop", "web"}, dflt{"cluster.local", "shop", "default"};
  ASSERT_TRUE(WaitFor([&] { return (*ids)->Get(web).ok() && (*ids)->Get(dflt).ok(); }));
  auto views = (*ids)->Views();
  ASSERT_EQ(views.size(), 2u);  // the unenrolled pod has none
  const IdentityView* v = Find(views, "spiffe://cluster.local/ns/shop/sa/web");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->state, "ready");
  EXPECT_EQ(v->pods, (std::vector<std::string>{"shop/web-1", "shop/web-2"}));
  EXPECT_FALSE(v->serial.empty());
  EXPECT_NE(v->issuer.find("wid-root"), std::string::npos) << v->issuer;
  EXPECT_EQ(v->not_after - v->not_before, absl::Hours(24) + absl::Minutes(1));  // backdated a minute
  EXPECT_EQ(v->renew_at, v->not_before + absl::Minutes(1) + absl::Hours(12));   // half of the 24 h ahead
  // The certificate names exactly that identity.
  auto cred = (*ids)->Get(web);
  auto in_cert = SpiffeIdOfCertificate((*cred)->cert.leaf.get());
  ASSERT_TRUE(in_cert.ok());
  EXPECT_EQ(*in_cert, web);
  // Identities of no pod of this node are neither served nor issued.
  EXPECT_EQ((*ids)->Get(SpiffeId{"cluster.local", "shop", "batch"}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(WorkloadIdentitiesTest, PodsLeavingDropTheirIdentity) {
  auto ids = WorkloadIdentities::Start(options_);
  ASSERT_TRUE(ids.ok()) << ids.status();
  (*ids)->SetWorkloads({MakePod("a", "p", "x"), MakePod("b", "q", "y")});
  const SpiffeId x{"cluster.local", "a", "x"}, y{"cluster.local", "b", "y"};
  ASSERT_TRUE(WaitFor([&] { return (*ids)->Get(x).ok() && (*ids)->Get(y).ok(); }));
  (*ids)->SetWorkloads({MakePod("b", "q", "y")});
  EXPECT_EQ((*ids)->Get(x).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*ids)->Get(y).ok());
  EXPECT_EQ((*ids)->Views().size(), 1u);
}

TEST_F(WorkloadIdentitiesTest, RenewsAtHalfLifeAndOpenSessionsKeepWorking) {
  options_.ttl = absl::Seconds(3);
  auto ids = WorkloadIdentities::Start(options_);
  ASSERT_TRUE(ids.ok()) << ids.status();
  (*ids)->SetWorkloads({MakePod("a", "client", "c"), MakePod("a", "server", "s")});
  const SpiffeId c{"cluster.local", "a", "c"}, s{"cluster.local", "a", "s"};
  ASSERT_TRUE(WaitFor([&] { return (*ids)->Get(c).ok() && (*ids)->Get(s).ok(); }));
  auto c0 = *(*ids)->Get(c);
  auto s0 = *(*ids)->Get(s);
  // A session on the first certificates.
  auto client = TlsSession::Client(c0->client_ctx, s);
  auto server = TlsSession::Server(s0->server_ctx, "cluster.local");
  ASSERT_TRUE(client.ok() && server.ok());
  Side a{.s = client->get()}, b{.s = server->get()};
  Pump(a, b);
  ASSERT_TRUE((*client)->handshake_done()) << TlsErrorName((*client)->error());
  // Past half of the 3 s (backdating does not count), a new serial.
  const std::string serial0 = c0->cert.serial_hex;
  ASSERT_TRUE(
      WaitFor([&] { return (*(*ids)->Get(c))->cert.serial_hex != serial0; }, std::chrono::seconds(10)));
  const auto views = (*ids)->Views();  // kept: Find points into it
  auto v = Find(views, "spiffe://cluster.local/ns/a/sa/c");
  ASSERT_NE(v, nullptr);
  EXPECT_GE(v->renewals, 1u);
  EXPECT_EQ(v->state, "ready");
  // The old session still moves bytes both ways.
  a.to_send = "after renewal";
  b.to_send = "both ways";
  Pump(a, b);
  EXPECT_EQ(b.received, "after renewal");
  EXPECT_EQ(a.received, "both ways");
}

TEST_F(WorkloadIdentitiesTest, TrustBundleChangeAppliesToNewContexts) {
  auto ids = WorkloadIdentities::Start(options_);
  ASSERT_TRUE(ids.ok()) << ids.status();
  (*ids)->SetWorkloads({MakePod("a", "p", "x")});
  const SpiffeId x{"cluster.local", "a", "x"};
  ASSERT_TRUE(WaitFor([&] { return (*ids)->Get(x).ok(); }));
  auto before = *(*ids)->Get(x);
  // A second root is added (rotation starts): the contexts are rebuilt with
  // the same certificate.
  auto other = MakeTestCaForTesting("wid-new-root");
  ASSERT_TRUE(other.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a different mtime
  dir_.Write("roots.pem", ca_.root_pem + other->root_pem);
  ASSERT_TRUE(WaitFor([&] { return (*(*ids)->Get(x))->server_ctx != before->server_ctx; }));
  auto after = *(*ids)->Get(x);
  EXPECT_EQ(after->cert.serial_hex, before->cert.serial_hex);
  EXPECT_GT(after->bundle_generation, before->bundle_generation);
}

TEST_F(WorkloadIdentitiesTest, BadConfigurationIsAClearError) {
  auto no_ca = options_;
  no_ca.ca_key_path.clear();
  EXPECT_EQ(WorkloadIdentities::Start(no_ca).status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_td = options_;
  bad_td.trust_domain = "Not A Domain";
  auto s = WorkloadIdentities::Start(bad_td).status();
  EXPECT_NE(s.message().find("trust domain"), std::string::npos) << s;
  auto missing = options_;
  missing.ca_cert_path = "/nonexistent/ca.pem";
  s = WorkloadIdentities::Start(missing).status();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("CA"), std::string::npos) << s;
  auto wrong_key = options_;
  auto other = MakeTestCaForTesting("other");
  ASSERT_TRUE(other.ok());
  wrong_key.ca_key_path = dir_.Write("other-key.pem", other->ca_key_pem);
  EXPECT_FALSE(WorkloadIdentities::Start(wrong_key).ok());
}

TEST_F(WorkloadIdentitiesTest, PodsWithoutAValidIdentityAreSkipped) {
  auto ids = WorkloadIdentities::Start(options_);
  ASSERT_TRUE(ids.ok()) << ids.status();
  (*ids)->SetWorkloads({MakePod("Bad_NS", "p", "x"), MakePod("ok", "q", "y")});
  ASSERT_TRUE(WaitFor([&] { return (*ids)->Get(SpiffeId{"cluster.local", "ok", "y"}).ok(); }));
  EXPECT_EQ((*ids)->Views().size(), 1u);
  EXPECT_FALSE(WorkloadIdentities::IdentityOf(MakePod("Bad_NS", "p", "x"), "cluster.local").ok());
}

}  // namespace
}  // namespace ringmesh::proxy::tls
