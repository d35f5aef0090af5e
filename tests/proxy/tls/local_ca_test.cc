#include "userspace/proxy/tls/local_ca.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/proxy/tls/tls_test_util.h"

namespace ringmesh::proxy::tls {
namespace {

using testing::Id;

const SpiffeId kWeb = SpiffeId{"cluster.local", "shop", "web"};

LocalCa::Options OnlyWeb() {
  LocalCa::Options o;
  o.allowed = [](const SpiffeId& id) { return id == kWeb; };
  return o;
}

std::unique_ptr<LocalCa> Load(const TestCaMaterial& m, LocalCa::Options o) {
  auto ca = LocalCa::FromPem(m.ca_cert_pem, m.ca_key_pem, m.chain_pem, std::move(o));
  EXPECT_TRUE(ca.ok()) << ca.status();
  return ca.ok() ? *std::move(ca) : nullptr;
}

TEST(LocalCa, LeafHasExactlyTheRequiredExtensions) {
  auto m = MakeTestCaForTesting("t");
  ASSERT_TRUE(m.ok()) << m.status();
  auto ca = Load(*m, OnlyWeb());
  auto key = MakeP256Key();
  ASSERT_TRUE(key.ok());
  const absl::Time before = absl::Now();
  auto issued = ca->Issue(kWeb, key->get(), absl::Hours(2));
  ASSERT_TRUE(issued.ok()) << issued.status();
  X509* leaf = issued->leaf.get();

  // Identity: one URI SAN, nothing in the subject.
  auto id = SpiffeIdOfCertificate(leaf);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, kWeb);
  EXPECT_EQ(X509_NAME_entry_count(X509_get_subject_name(leaf)), 0);
  int crit = -1;
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, nullptr)));
  ASSERT_TRUE(names);
  EXPECT_EQ(sk_GENERAL_NAME_num(names.get()), 1);
  EXPECT_EQ(crit, 1);

  // Extensions: exactly these, CA:FALSE, KU and EKU as required.
  std::set<int> nids;
  for (int i = 0; i < X509_get_ext_count(leaf); ++i) {
    nids.insert(OBJ_obj2nid(X509_EXTENSION_get_object(X509_get_ext(leaf, i))));
  }
  EXPECT_EQ(nids,
            (std::set<int>{NID_basic_constraints, NID_key_usage, NID_ext_key_usage,
                           NID_subject_key_identifier, NID_authority_key_identifier, NID_subject_alt_name}));
  EXPECT_EQ(X509_check_ca(leaf), 0);
  const uint32_t flags = X509_get_extension_flags(leaf);
  EXPECT_TRUE(flags & EXFLAG_BCONS);
  EXPECT_FALSE(flags & EXFLAG_CA);
  EXPECT_EQ(X509_get_key_usage(leaf), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT));
  EXPECT_EQ(X509_get_extended_key_usage(leaf), static_cast<uint32_t>(XKU_SSL_SERVER | XKU_SSL_CLIENT));

  // Key, signature, serial.
  EXPECT_TRUE(IsP256Key(X509_get0_pubkey(leaf)));
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(leaf), key->get()), 1);
  EXPECT_EQ(X509_get_signature_nid(leaf), NID_ecdsa_with_SHA256);
  EXPECT_EQ(X509_verify(leaf, X509_get0_pubkey(ca->certificate())), 1);
  EXPECT_EQ(X509_get_version(leaf), X509_VERSION_3);
  EXPECT_GE(issued->serial_hex.size(), 31u);
  BignumPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), nullptr));
  EXPECT_FALSE(BN_is_negative(serial.get()));
  EXPECT_GE(BN_num_bits(serial.get()), 120);

  // Validity: backdated a minute, ends at now + ttl.
  const absl::Time nb = Asn1TimeToAbsl(X509_get0_notBefore(leaf));
  const absl::Time na = Asn1TimeToAbsl(X509_get0_notAfter(leaf));
  EXPECT_EQ(nb, issued->not_before);
  EXPECT_EQ(na, issued->not_after);
  EXPECT_LE(nb, before - absl::Seconds(59));
  EXPECT_GE(nb, before - absl::Minutes(2));
  EXPECT_GE(na, before + absl::Hours(2) - absl::Seconds(1));
  EXPECT_LE(na, absl::Now() + absl::Hours(2));

  // The chain is the intermediate alone (the root stays with the peers).
  ASSERT_EQ(issued->chain.size(), 1u);
  EXPECT_EQ(X509_cmp(issued->chain[0].get(), ca->certificate()), 0);

  // Two leaves never share a serial.
  auto again = ca->Issue(kWeb, key->get(), absl::Hours(2));
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->serial_hex, issued->serial_hex);
}

TEST(LocalCa, RefusesIdentitiesNotOnTheNode) {
  auto m = MakeTestCaForTesting("t");
  ASSERT_TRUE(m.ok());
  auto ca = Load(*m, OnlyWeb());
  auto key = MakeP256Key();
  auto other = ca->Issue(Id("spiffe://cluster.local/ns/shop/sa/db"), key->get(), absl::Hours(1));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kPermissionDenied);
  // No `allowed` at all: nothing is issued (fail closed).
  auto closed = Load(*m, LocalCa::Options{});
  EXPECT_EQ(closed->Issue(kWeb, key->get(), absl::Hours(1)).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(LocalCa, RefusesBadKeysAndTtls) {
  auto m = MakeTestCaForTesting("t");
  ASSERT_TRUE(m.ok());
  auto ca = Load(*m, OnlyWeb());
  EvpPkeyPtr rsa(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}));
  ASSERT_TRUE(rsa);
  EXPECT_EQ(ca->Issue(kWeb, rsa.get(), absl::Hours(1)).status().code(), absl::StatusCode::kInvalidArgument);
  auto key = MakeP256Key();
  EXPECT_FALSE(ca->Issue(kWeb, key->get(), absl::ZeroDuration()).ok());
}

TEST(LocalCa, NeverOutlivesTheCa) {
  auto m = MakeTestCaForTesting("short", true, absl::Hours(1));
  ASSERT_TRUE(m.ok());
  auto ca = Load(*m, OnlyWeb());
  auto key = MakeP256Key();
  auto leaf = ca->Issue(kWeb, key->get(), absl::Hours(24));
  ASSERT_TRUE(leaf.ok());
  EXPECT_EQ(leaf->not_after, Asn1TimeToAbsl(X509_get0_notAfter(ca->certificate())));
}

TEST(LocalCa, LoadChecksKeyAndCaBits) {
  auto a = MakeTestCaForTesting("a");
  auto b = MakeTestCaForTesting("b");
  ASSERT_TRUE(a.ok() && b.ok());
  // Key of another CA.
  EXPECT_FALSE(LocalCa::FromPem(a->ca_cert_pem, b->ca_key_pem, "", OnlyWeb()).ok());
  // A leaf is not a CA.
  auto ca = Load(*a, OnlyWeb());
  auto key = MakeP256Key();
  auto leaf = ca->Issue(kWeb, key->get(), absl::Hours(1));
  ASSERT_TRUE(leaf.ok());
  auto not_ca = LocalCa::FromPem(ToPem(leaf->leaf.get()), PrivateKeyToPem(key->get()), "", OnlyWeb());
  EXPECT_FALSE(not_ca.ok());
  // Garbage.
  EXPECT_FALSE(LocalCa::FromPem("not pem", a->ca_key_pem, "", OnlyWeb()).ok());
  EXPECT_FALSE(LocalCa::FromPem(a->ca_cert_pem,
                                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "",
                                OnlyWeb())
                   .ok());
  // A root-only CA sends no chain.
  auto root_only = MakeTestCaForTesting("r", false);
  ASSERT_TRUE(root_only.ok());
  auto rca = Load(*root_only, OnlyWeb());
  auto from_root = rca->Issue(kWeb, key->get(), absl::Hours(1));
  ASSERT_TRUE(from_root.ok());
  EXPECT_TRUE(from_root->chain.empty());
}

TEST(LocalCa, LoadsFromFiles) {
  auto m = MakeTestCaForTesting("files");
  ASSERT_TRUE(m.ok());
  const auto dir = std::filesystem::temp_directory_path() / ("ringmesh_local_ca_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const char* name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  };
  auto ca =
      LocalCa::FromFiles(write("ca.pem", m->ca_cert_pem), write("key.pem", m->ca_key_pem), "", OnlyWeb());
  EXPECT_TRUE(ca.ok()) << ca.status();
  EXPECT_FALSE(
      LocalCa::FromFiles((dir / "missing.pem").string(), (dir / "key.pem").string(), "", OnlyWeb()).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ringmesh::proxy::tls
