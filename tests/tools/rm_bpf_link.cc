// rm-bpf-link: attaches a trivial allow-everything cgroup/connect4 program to
// a cgroup through a bpf_link, for tests of the harness itself (leak checks,
// teardown of pinned links). It uses the raw bpf(2) syscall so it needs
// neither libbpf nor a compiled BPF object.
//
//   rm-bpf-link --cgroup <run cgroup>/n1/pods --pin <pin root>/n1/link   # pin, exit
//   rm-bpf-link --cgroup DIR --hold                          # hold fd until SIGTERM
//
// Prints {"link_id":N,"prog_id":N,"cgroup":"DIR"}. The program returns 1
// (allow), so attaching it changes no behaviour of the processes it sees.

#include <fcntl.h>
#include <linux/bpf.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

int Bpf(int cmd, bpf_attr* attr) {
  return static_cast<int>(syscall(__NR_bpf, cmd, attr, sizeof(*attr)));
}

uint64_t Ptr(const void* p) { return reinterpret_cast<uint64_t>(p); }

int Fail(const char* what) {
  std::fprintf(stderr, "rm-bpf-link: %s: %s\n", what, std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"rm-bpf-link: attach an allow-all cgroup/connect4 program with a bpf_link"};
  std::string cgroup, pin;
  bool hold = false;
  app.add_option("--cgroup", cgroup, "cgroup v2 directory to attach to")->required();
  app.add_option("--pin", pin, "bpffs path to pin the link at (then exit)");
  app.add_flag("--hold", hold, "keep the link only in this process until SIGTERM/SIGINT");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (pin.empty() == !hold) {
    std::fprintf(stderr, "rm-bpf-link: give exactly one of --pin or --hold\n");
    return 2;
  }

  // r0 = 1; exit  -> allow the connect unchanged.
  bpf_insn insns[2] = {};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = 1;
  insns[1].code = BPF_JMP | BPF_EXIT;
  const char license[] = "GPL";

  bpf_attr load{};
  load.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
  load.expected_attach_type = BPF_CGROUP_INET4_CONNECT;
  load.insns = Ptr(insns);
  load.insn_cnt = 2;
  load.license = Ptr(license);
  std::strncpy(load.prog_name, "rm_test_allow", sizeof(load.prog_name) - 1);
  int prog_fd = Bpf(BPF_PROG_LOAD, &load);
  if (prog_fd < 0) return Fail("BPF_PROG_LOAD");

  int cg_fd = open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg_fd < 0) return Fail(("open " + cgroup).c_str());

  bpf_attr link{};
  link.link_create.prog_fd = static_cast<uint32_t>(prog_fd);
  link.link_create.target_fd = static_cast<uint32_t>(cg_fd);
  link.link_create.attach_type = BPF_CGROUP_INET4_CONNECT;
  int link_fd = Bpf(BPF_LINK_CREATE, &link);
  if (link_fd < 0) return Fail("BPF_LINK_CREATE");

  bpf_link_info info{};
  bpf_attr get{};
  get.info.bpf_fd = static_cast<uint32_t>(link_fd);
  get.info.info_len = sizeof(info);
  get.info.info = Ptr(&info);
  if (Bpf(BPF_OBJ_GET_INFO_BY_FD, &get) != 0) return Fail("BPF_OBJ_GET_INFO_BY_FD");

  if (!pin.empty()) {
    bpf_attr p{};
    p.pathname = Ptr(pin.c_str());
    p.bpf_fd = static_cast<uint32_t>(link_fd);
    if (Bpf(BPF_OBJ_PIN, &p) != 0) return Fail(("BPF_OBJ_PIN " + pin).c_str());
  }
  std::printf("{\"link_id\":%u,\"prog_id\":%u,\"cgroup\":\"%s\"}\n", info.id, info.prog_id, cgroup.c_str());
  std::fflush(stdout);
  if (hold) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    // Bounded like every test tool: at most an hour.
    timespec ts{3600, 0};
    sigtimedwait(&set, nullptr, &ts);
  }
  return 0;
}
