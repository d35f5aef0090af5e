// rm-kshortcut: loads bench/bpf/kshortcut.bpf.c (the "K" benchmark peer)
// and attaches it to one cgroup, everything pinned under one directory so
// that removing the directory detaches it.
//
//   rm-kshortcut attach --cgroup <run cgroup>/n1 --pin-dir <pin root>/n1/kshortcut
//   rm-kshortcut stats  --pin-dir DIR      # counters as JSON
//   rm-kshortcut detach --pin-dir DIR      # counters as JSON, then unpin all
//
// sockops goes through a pinned bpf_link on the cgroup; sk_msg is attached to
// the pinned sockhash (the attachment lives as long as the map).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kshortcut.skel.h"

namespace {

const char* const kCounterNames[] = {"sockhash_added",  "sockhash_full",       "msg_redirected",
                                     "msg_pass_miss",   "msg_pass_committed",  "msg_no_state"};
constexpr int kCounters = sizeof(kCounterNames) / sizeof(kCounterNames[0]);

int Usage() {
  std::fprintf(stderr,
               "usage: rm-kshortcut attach --cgroup DIR --pin-dir DIR\n"
               "       rm-kshortcut stats|detach --pin-dir DIR\n");
  return 2;
}

int Fail(const std::string& what, int err) {
  std::fprintf(stderr, "rm-kshortcut: %s: %s\n", what.c_str(), std::strerror(err));
  return 1;
}

int Attach(const std::string& cgroup, const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) != 0) return Fail("mkdir " + dir, errno);
  kshortcut* skel = kshortcut__open_and_load();
  if (skel == nullptr) return Fail("load kshortcut.bpf.o", errno);
  int rc = 0;
  int cg = open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  bpf_link* link = nullptr;
  if (cg < 0) {
    rc = Fail("open " + cgroup, errno);
    goto out;
  }
  if (int e = bpf_map__pin(skel->maps.ks_sockhash, (dir + "/ks_sockhash").c_str()); e != 0) {
    rc = Fail("pin sockhash", -e);
    goto out;
  }
  if (int e = bpf_map__pin(skel->maps.ks_counters, (dir + "/ks_counters").c_str()); e != 0) {
    rc = Fail("pin counters", -e);
    goto out;
  }
  if (bpf_prog_attach(bpf_program__fd(skel->progs.ks_msg), bpf_map__fd(skel->maps.ks_sockhash),
                      BPF_SK_MSG_VERDICT, 0) != 0) {
    rc = Fail("attach sk_msg", errno);
    goto out;
  }
  link = bpf_program__attach_cgroup(skel->progs.ks_sockops, cg);
  if (link == nullptr) {
    rc = Fail("attach sockops to " + cgroup, errno);
    goto out;
  }
  if (int e = bpf_link__pin(link, (dir + "/link_sockops").c_str()); e != 0) {
    rc = Fail("pin sockops link", -e);
    goto out;
  }
  std::printf("{\"attached\":\"%s\",\"pin_dir\":\"%s\"}\n", cgroup.c_str(), dir.c_str());
out:
  if (link != nullptr) bpf_link__destroy(link);  // the pin keeps it
  if (cg >= 0) close(cg);
  kshortcut__destroy(skel);
  if (rc != 0) {
    unlink((dir + "/link_sockops").c_str());
    unlink((dir + "/ks_sockhash").c_str());
    unlink((dir + "/ks_counters").c_str());
    rmdir(dir.c_str());
  }
  return rc;
}

int Stats(const std::string& dir) {
  int fd = bpf_obj_get((dir + "/ks_counters").c_str());
  if (fd < 0) return Fail("open " + dir + "/ks_counters", errno);
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return Fail("possible cpus", -ncpu);
  std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpu));
  std::printf("{");
  for (uint32_t i = 0; i < kCounters; ++i) {
    uint64_t sum = 0;
    if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) == 0)
      for (uint64_t v : per_cpu) sum += v;
    std::printf("%s\"%s\":%llu", i ? "," : "", kCounterNames[i], static_cast<unsigned long long>(sum));
  }
  std::printf("}\n");
  close(fd);
  return 0;
}

int Detach(const std::string& dir) {
  int rc = Stats(dir);
  for (const char* f : {"/link_sockops", "/ks_sockhash", "/ks_counters"}) {
    if (unlink((dir + f).c_str()) != 0 && errno != ENOENT) rc = Fail("unlink " + dir + f, errno);
  }
  if (rmdir(dir.c_str()) != 0 && errno != ENOENT) rc = Fail("rmdir " + dir, errno);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  std::string cmd = argv[1], cgroup, dir;
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc) return Usage();
    std::string k = argv[i];
    if (k == "--cgroup") {
      cgroup = argv[i + 1];
    } else if (k == "--pin-dir") {
      dir = argv[i + 1];
    } else {
      return Usage();
    }
  }
  if (dir.empty()) return Usage();
  libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
  if (cmd == "attach") return cgroup.empty() ? Usage() : Attach(cgroup, dir);
  if (cmd == "stats") return Stats(dir);
  if (cmd == "detach") return Detach(dir);
  return Usage();
}
