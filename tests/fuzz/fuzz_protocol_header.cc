// Fuzzes the snapshot protocol codec: the header, every payload parser, and
// the reassembly of a whole snapshot from a sequence of messages with real
// file descriptors attached.
//
// Input: byte 0 is a mode; the rest is a sequence of records
//   u16 little-endian length, then that many bytes of one SEQPACKET message.
// Mode bit 0 attaches one fd more than the header announces, bit 1 one fewer,
// so the "fds do not match" paths run too.
//
// Properties: no crash; a payload that parses re-encodes to the same bytes
// (the encoding is canonical); and no descriptor survives the iteration,
// whatever happened — the fd-leak guarantee of the receive path.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "userspace/common/snapshot_protocol.h"

namespace {

using namespace ringmesh;         // NOLINT
using namespace ringmesh::proto;  // NOLINT

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

// Every payload parser on the payload, whatever the header says.
void ParsePayloads(const Header& header, std::string_view payload) {
  if (auto h = ParseHello(payload); h.ok()) Check(EncodeHello(*h) == payload, "HELLO canonical");
  if (auto b = ParseSnapshotBegin(payload); b.ok())
    Check(EncodeSnapshotBegin(*b) == payload, "BEGIN canonical");
  if (auto c = ParseNetnsFds(payload, header.fd_count); c.ok()) {
    Check(EncodeNetnsFds(*c) == payload, "NETNS_FDS canonical");
  }
  if (auto f = ParseSnapshotFragment(payload); f.ok()) {
    Check(EncodeSnapshotFragment(f->offset, f->data) == payload, "SNAPSHOT_END canonical");
  }
  if (auto a = ParseAck(payload); a.ok()) Check(EncodeAck(*a) == payload, "ACK canonical");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int kDevNull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

  // The whole input as one message, too.
  if (auto h = ParseHeader(in); h.ok()) {
    Check(EncodeHeader(*h) == in.substr(0, kHeaderSize), "header canonical");
  }
  if (auto m = ParseMessage(in); m.ok()) ParsePayloads(m->header, m->payload);

  std::vector<int> created;
  {
    SnapshotAssembler assembler(ReceiveOptions{1 << 20, 4096});
    absl::StatusOr<ReceivedSnapshot> result = absl::UnknownError("not complete");
    while (in.size() >= 2) {
      size_t len = static_cast<uint8_t>(in[0]) | size_t{static_cast<uint8_t>(in[1])} << 8;
      in.remove_prefix(2);
      std::string_view message = in.substr(0, len);
      in.remove_prefix(message.size());
      auto parsed = ParseMessage(message);
      if (!parsed.ok()) break;
      ParsePayloads(parsed->header, parsed->payload);
      if (!CheckMessageVersion(parsed->header).ok()) break;
      size_t n = parsed->header.fd_count;
      if ((mode & 1) != 0) ++n;
      if ((mode & 2) != 0 && n > 0) --n;
      std::vector<UniqueFd> fds;
      for (size_t i = 0; i < n && created.size() < 2000; ++i) {
        int fd = fcntl(kDevNull, F_DUPFD_CLOEXEC, 0);
        Check(fd >= 0, "dup");
        created.push_back(fd);
        fds.emplace_back(fd);
      }
      if (!assembler.Feed(parsed->header, parsed->payload, std::move(fds)).ok()) break;
      if (assembler.complete()) {
        result = assembler.Take();
        break;
      }
    }
    if (result.ok()) {
      Check(result->netns_fds.size() == result->snapshot.pods.size(), "one fd slot per pod");
    }
  }
  // Everything received was owned and is closed now.
  for (int fd : created) Check(fcntl(fd, F_GETFD) == -1, "no fd leaks");
  return 0;
}
