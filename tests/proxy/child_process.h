// Helpers for interop tests that talk to a peer implementation not written
// here (openssl, node, python3-h2) over loopback TCP: a child process that is
// killed and reaped on every path out of the test, reads of its stdout that
// always have a deadline, and the loopback listen/accept/connect steps.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "userspace/common/unique_fd.h"

extern char** environ;

namespace ringmesh::proxy::testing {

using ChildClock = std::chrono::steady_clock;

// Milliseconds left until `deadline`, at least 0 (for poll()).
inline int MillisLeft(ChildClock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - ChildClock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, INT32_MAX));
}

struct ChildOptions {
  // Give the child a pipe as stdin (write to it via stdin_fd()); otherwise it inherits ours.
  bool pipe_stdin = false;
  // Send the child's stderr to this file (truncated); empty inherits ours, so it lands in the test log.
  std::string stderr_path;
};

// A peer process with stdout on a pipe. The destructor kills and reaps it
// whatever happened, so a failed ASSERT never leaves a process behind.
class ChildProcess {
 public:
  // args[0] is looked up in PATH when it has no '/'. running() is false when it could not start.
  explicit ChildProcess(const std::vector<std::string>& args, const ChildOptions& options = {}) {
    int in[2] = {-1, -1}, out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return;
    UniqueFd out_read(out[0]), out_write(out[1]);
    if (options.pipe_stdin && pipe2(in, O_CLOEXEC) != 0) return;
    UniqueFd in_read(in[0]), in_write(in[1]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (options.pipe_stdin) posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    if (!options.stderr_path.empty()) {
      posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, options.stderr_path.c_str(),
                                       O_WRONLY | O_CREAT | O_TRUNC, 0600);
    }
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    const int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return;
    pid_ = pid;
    stdout_ = std::move(out_read);
    stdin_ = std::move(in_write);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  bool running() const { return pid_ > 0; }
  int stdin_fd() const { return stdin_.get(); }

  // One line of the child's stdout (without '\n'), or nullopt on EOF or at the deadline.
  std::optional<std::string> ReadLine(ChildClock::time_point deadline) {
    for (;;) {
      if (size_t nl = buffered_.find('\n'); nl != std::string::npos) {
        std::string line = buffered_.substr(0, nl);
        buffered_.erase(0, nl + 1);
        return line;
      }
      if (!ReadSome(buffered_, deadline)) return std::nullopt;
    }
  }

  // Appends the child's stdout to `out` until `pred(out)` holds; false on EOF or at the deadline.
  bool ReadUntil(std::string& out, const std::function<bool(const std::string&)>& pred,
                 ChildClock::time_point deadline) {
    out += buffered_;
    buffered_.clear();
    while (!pred(out)) {
      if (!ReadSome(out, deadline)) return false;
    }
    return true;
  }

  // Exit status (128 + signal when killed by one), or -1 if it did not exit before the deadline.
  int Wait(ChildClock::time_point deadline) {
    while (pid_ > 0 && ChildClock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      usleep(10 * 1000);
    }
    return -1;
  }

 private:
  bool ReadSome(std::string& into, ChildClock::time_point deadline) {
    const int ms = MillisLeft(deadline);
    if (ms <= 0 || !stdout_.valid()) return false;
    pollfd p{stdout_.get(), POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return false;
    char buf[4096];
    ssize_t n = read(stdout_.get(), buf, sizeof(buf));
    if (n <= 0) return false;
    into.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  UniqueFd stdin_, stdout_;
  std::string buffered_;  // read from stdout but not yet returned by ReadLine
};

// A TCP listener on 127.0.0.1 with an ephemeral port; `fd` is invalid on failure.
struct LoopbackListener {
  UniqueFd fd;
  uint16_t port = 0;
};
inline LoopbackListener ListenOnLoopback(int backlog = 4) {
  LoopbackListener l;
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (!fd.valid() || bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd.get(), backlog) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return l;
  }
  l.fd = std::move(fd);
  l.port = ntohs(addr.sin_port);
  return l;
}

// The first connection to `listener` (accept4 with `flags`), or an invalid fd if none came in time.
inline UniqueFd AcceptBefore(const LoopbackListener& listener, ChildClock::time_point deadline,
                             int flags = SOCK_CLOEXEC | SOCK_NONBLOCK) {
  pollfd p{listener.fd.get(), POLLIN, 0};
  if (poll(&p, 1, MillisLeft(deadline)) != 1) return UniqueFd();
  return UniqueFd(accept4(listener.fd.get(), nullptr, nullptr, flags));
}

// A TCP connection to 127.0.0.1:`port` (blocking connect), made non-blocking when asked; invalid on failure.
inline UniqueFd ConnectToLoopback(uint16_t port, bool nonblocking) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (!fd.valid() || connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return UniqueFd();
  if (nonblocking && fcntl(fd.get(), F_SETFL, O_NONBLOCK) != 0) return UniqueFd();
  return fd;
}

}  // namespace ringmesh::proxy::testing
