// Fuzzes the kubeconfig loader (LoadKubeconfig in
// userspace/agent/k8s/api_client.h, yaml-cpp underneath). It only takes a
// path, so the input is written to a memfd and read back through
// /proc/self/fd/<n>: nothing touches the file system and nothing is left
// behind.
//
// Each input is loaded twice: with its current-context and with the explicit
// context "prod" (the seeds define one), so both ways of picking the context
// run.
//
// Properties:
//   - no crash and no exception escapes (yaml-cpp throws; the loader must
//     turn every failure into a status);
//   - every error names the file ("<path>: ...");
//   - a loaded config has a server without a trailing '/', and every file it
//     refers to (CA, client certificate and key, token file) is absolute,
//     relative paths being resolved against the kubeconfig's directory.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "userspace/agent/k8s/api_client.h"

namespace {

using ringmesh::agent::k8s::ApiConfig;
using ringmesh::agent::k8s::LoadKubeconfig;

void Check(bool ok, const char* what, const std::string& detail = "") {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n%s\n", what, detail.c_str());
    std::abort();
  }
}

void CheckConfig(const absl::StatusOr<ApiConfig>& cfg, const std::string& path) {
  if (!cfg.ok()) {
    std::string message(cfg.status().message());
    Check(message.rfind(path + ": ", 0) == 0, "error without the file name", message);
    return;
  }
  Check(!cfg->server.empty() && cfg->server.back() != '/', "server empty or with a trailing '/'",
        cfg->server);
  for (const std::string* file :
       {&cfg->tls.ca_file, &cfg->tls.cert_file, &cfg->tls.key_file, &cfg->token_file}) {
    Check(file->empty() || (*file)[0] == '/', "relative file path not resolved", *file);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("fuzz-kubeconfig", MFD_CLOEXEC);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  Check(fd >= 0, "memfd_create");
  Check(ftruncate(fd, 0) == 0, "ftruncate");
  for (size_t off = 0; off < size;) {
    ssize_t n = pwrite(fd, data + off, size - off, static_cast<off_t>(off));
    Check(n > 0, "pwrite");
    off += static_cast<size_t>(n);
  }
  CheckConfig(LoadKubeconfig(path), path);
  CheckConfig(LoadKubeconfig(path, "prod"), path);
  return 0;
}
