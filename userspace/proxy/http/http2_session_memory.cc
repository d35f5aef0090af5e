// Http2Session's memory account: nghttp2 allocates through an nghttp2_mem that counts every byte
// against Http2Options::max_session_memory.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "userspace/proxy/http/http2_session.h"
#include "userspace/proxy/http/http2_session_internal.h"

namespace ringmesh::proxy::http {
namespace {

// Allocation prefix that remembers the size.
constexpr size_t kAllocHeader = alignof(std::max_align_t);

}  // namespace

size_t Http2Session::MemoryUsage() const {
  size_t n = nghttp2_bytes_ + output_.capacity();
  for (const auto& [id, s] : streams_) n += sizeof(Stream) + s->send.capacity();
  return n;
}

size_t Http2Session::send_buffered(int32_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? 0 : it->second->queued();
}

// Memory account: nghttp2 allocates through these; past the cap it gets nullptr (NGHTTP2_ERR_NOMEM),
// except for the GOAWAY written while failing.
void* Http2Session::Malloc(size_t size, void* ud) {
  auto* self = static_cast<Http2Session*>(ud);
  if (size > std::numeric_limits<size_t>::max() - kAllocHeader) return nullptr;
  if (self->nghttp2_bytes_ + size > self->options_.max_session_memory && !self->stopped_reading_) {
    return nullptr;
  }
  auto* p = static_cast<char*>(std::malloc(size + kAllocHeader));
  if (p == nullptr) return nullptr;
  std::memcpy(p, &size, sizeof(size));
  self->nghttp2_bytes_ += size;
  return p + kAllocHeader;
}

void Http2Session::Free(void* ptr, void* ud) {
  if (ptr == nullptr) return;
  char* p = static_cast<char*>(ptr) - kAllocHeader;
  size_t size;
  std::memcpy(&size, p, sizeof(size));
  static_cast<Http2Session*>(ud)->nghttp2_bytes_ -= size;
  std::free(p);
}

void* Http2Session::Calloc(size_t n, size_t size, void* ud) {
  if (size != 0 && n > std::numeric_limits<size_t>::max() / size) return nullptr;
  void* p = Malloc(n * size, ud);
  if (p != nullptr) std::memset(p, 0, n * size);
  return p;
}

void* Http2Session::Realloc(void* ptr, size_t size, void* ud) {
  if (ptr == nullptr) return Malloc(size, ud);
  if (size == 0) {
    Free(ptr, ud);
    return nullptr;
  }
  void* fresh = Malloc(size, ud);
  if (fresh == nullptr) return nullptr;
  size_t old;
  std::memcpy(&old, static_cast<char*>(ptr) - kAllocHeader, sizeof(old));
  std::memcpy(fresh, ptr, std::min(old, size));
  Free(ptr, ud);
  return fresh;
}

}  // namespace ringmesh::proxy::http
