// The kubelet's pod cgroup layouts, and the filesystem locator on a fake
// cgroup tree whose cgroup.procs list real processes (this test's own).
#include "userspace/agent/k8s/pod_locator.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace ringmesh::agent::k8s {
namespace {

const std::string kUid = "1b2c3d4e-0000-4a5b-8c9d-0123456789ab";
const std::string kUidSystemd = "1b2c3d4e_0000_4a5b_8c9d_0123456789ab";

TEST(KubeletPodCgroup, SystemdDriver) {
  EXPECT_EQ(KubeletPodCgroup(CgroupDriver::kSystemd, QosClass::kGuaranteed, kUid),
            "kubepods.slice/kubepods-pod" + kUidSystemd + ".slice");
  EXPECT_EQ(KubeletPodCgroup(CgroupDriver::kSystemd, QosClass::kBurstable, kUid),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kUidSystemd + ".slice");
  EXPECT_EQ(KubeletPodCgroup(CgroupDriver::kSystemd, QosClass::kBestEffort, kUid),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + kUidSystemd + ".slice");
  // kubelet --cgroup-root=/kubelet (kind, nested setups).
  EXPECT_EQ(KubeletPodCgroup(CgroupDriver::kSystemd, QosClass::kBurstable, kUid, "/kubelet"),
            "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
            "kubelet-kubepods-burstable-pod" +
                kUidSystemd + ".slice");
}

TEST(KubeletPodCgroup, CgroupfsDriver) {
  EXPECT_EQ(KubeletPodCgroup(CgroupDriver::kCgroupfs, QosClass::kGuaranteed, kUid), "kubepods/pod" + kUid);
  EXPECT_EQ(KubeletPodCgroup(CgroupDriver::kCgroupfs, QosClass::kBurstable, kUid),
            "kubepods/burstable/pod" + kUid);
  EXPECT_EQ(KubeletPodCgroup(CgroupDriver::kCgroupfs, QosClass::kBestEffort, kUid),
            "kubepods/besteffort/pod" + kUid);
  EXPECT_EQ(KubeletPodCgroup(CgroupDriver::kCgroupfs, QosClass::kBestEffort, kUid, "/kubelet/"),
            "kubelet/kubepods/besteffort/pod" + kUid);
}

TEST(CgroupDriver, Parse) {
  EXPECT_EQ(ParseCgroupDriver("systemd"), CgroupDriver::kSystemd);
  EXPECT_EQ(ParseCgroupDriver("cgroupfs"), CgroupDriver::kCgroupfs);
  EXPECT_EQ(ParseCgroupDriver("auto"), CgroupDriver::kAuto);
  EXPECT_FALSE(ParseCgroupDriver("upstart").has_value());
}

TEST(DefaultCgroupRoot, IsADirectory) { EXPECT_TRUE(std::filesystem::is_directory(DefaultCgroupRoot())); }

class LocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringmesh-cgroup-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    if (child_ > 0) {
      kill(child_, SIGKILL);
      waitpid(child_, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  // A cgroup directory with these pids in its cgroup.procs.
  std::string MakeCgroup(const std::string& rel, const std::vector<pid_t>& pids) {
    std::string dir = root_ + "/" + rel;
    std::filesystem::create_directories(dir);
    std::ofstream procs(dir + "/cgroup.procs");
    for (pid_t p : pids) procs << p << "\n";
    return dir;
  }
  CgroupPodLocator Locator(CgroupDriver driver = CgroupDriver::kAuto) {
    CgroupPodLocatorOptions o;
    o.cgroup_root = root_;
    o.driver = driver;
    return CgroupPodLocator(o);
  }

  std::string root_;
  pid_t child_ = -1;
};

TEST_F(LocatorTest, SystemdLayoutProcessInAContainerSubCgroup) {
  std::string pod_dir = MakeCgroup(KubeletPodCgroup(CgroupDriver::kSystemd, QosClass::kBurstable, kUid), {});
  MakeCgroup(
      KubeletPodCgroup(CgroupDriver::kSystemd, QosClass::kBurstable, kUid) + "/cri-containerd-abc.scope",
      {getpid()});
  auto locator = Locator();
  auto where = locator.Locate({"ns", "p", kUid, "Burstable"});
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->cgroup_path, pod_dir);
  EXPECT_EQ(where->netns_path, absl::StrCat("/proc/", getpid(), "/ns/net"));
  // Unknown QoS class: every class is tried.
  auto again = Locator().Locate({"ns", "p", kUid, ""});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->cgroup_path, pod_dir);
}

TEST_F(LocatorTest, CgroupfsLayoutGuaranteed) {
  std::string pod_dir =
      MakeCgroup(KubeletPodCgroup(CgroupDriver::kCgroupfs, QosClass::kGuaranteed, kUid), {});
  MakeCgroup(KubeletPodCgroup(CgroupDriver::kCgroupfs, QosClass::kGuaranteed, kUid) + "/abc123", {getpid()});
  auto where = Locator().Locate({"ns", "p", kUid, "Guaranteed"});
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->cgroup_path, pod_dir);
  // The systemd-only locator does not look there.
  EXPECT_EQ(Locator(CgroupDriver::kSystemd).Locate({"ns", "p", kUid, "Guaranteed"}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(LocatorTest, NotYetThere) {
  auto missing = Locator().Locate({"ns", "p", kUid, "BestEffort"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no cgroup yet"), absl::string_view::npos);
  // The cgroup exists but holds no process yet (sandbox starting).
  MakeCgroup(KubeletPodCgroup(CgroupDriver::kSystemd, QosClass::kBestEffort, kUid), {});
  auto empty = Locator().Locate({"ns", "p", kUid, "BestEffort"});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(empty.status().message().find("no process"), absl::string_view::npos);
}

TEST_F(LocatorTest, PicksTheOldestProcess) {
  // A process started after us (an exec probe, say) is listed first; the
  // older one (standing in for the pause process) must win.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // distinct start ticks
  const pid_t parent = getpid();
  child_ = fork();
  ASSERT_GE(child_, 0);
  if (child_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the test process
    if (getppid() != parent) _exit(0);
    sleep(30);
    _exit(0);
  }
  std::string rel = KubeletPodCgroup(CgroupDriver::kCgroupfs, QosClass::kBurstable, kUid);
  MakeCgroup(rel, {});
  MakeCgroup(rel + "/probe", {child_});
  MakeCgroup(rel + "/pause", {getpid()});
  auto locator = Locator();
  auto pid = locator.OldestProcess(root_ + "/" + rel);
  ASSERT_TRUE(pid.ok()) << pid.status();
  EXPECT_EQ(*pid, getpid());
}

// The UID comes from the API server and becomes part of a path: one that
// is not a UUID must be refused before any path is formed, even where the
// path it would form exists (here it escapes to <root>/outside).
TEST_F(LocatorTest, RefusesUidsThatAreNotUuids) {
  MakeCgroup("kubepods/besteffort/pod", {});
  MakeCgroup("outside", {getpid()});
  for (const std::string& uid : std::vector<std::string>{
           "/../../../outside", "../../x", "", kUid + "0", kUid.substr(1),
           "1b2c3d4e-0000-4a5b-8c9d-0123456789ag", "1b2c3d4e00000-4a5b-8c9d-0123456789ab",
           "1b2c3d4e-0000-4a5b-8c9d-01234567/9ab"}) {
    auto where = Locator(CgroupDriver::kCgroupfs).Locate({"ns", "p", uid, "BestEffort"});
    EXPECT_EQ(where.status().code(), absl::StatusCode::kInvalidArgument)
        << "uid \"" << uid << "\": " << (where.ok() ? where->cgroup_path : where.status().ToString());
  }
  // Upper-case hex is still a UUID (the API server's are lower-case, but
  // RFC 4122 reads both).
  std::string upper = "1B2C3D4E-0000-4A5B-8C9D-0123456789AB";
  MakeCgroup(KubeletPodCgroup(CgroupDriver::kCgroupfs, QosClass::kBestEffort, upper), {getpid()});
  auto where = Locator(CgroupDriver::kCgroupfs).Locate({"ns", "p", upper, "BestEffort"});
  EXPECT_TRUE(where.ok()) << where.status();
}

}  // namespace
}  // namespace ringmesh::agent::k8s
