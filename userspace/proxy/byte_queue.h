// Bounded byte queue for one direction of a proxied connection. Memory comes
// in fixed chunks from a per-worker pool and goes back as soon as it is sent,
// so an idle connection holds no buffer memory and a busy one never holds
// more than its cap (rounded up to whole chunks).
#pragma once

#include <cstddef>
#include <cstring>
#include <deque>
#include <memory>
#include <span>
#include <vector>

namespace ringmesh::proxy {

inline constexpr size_t kChunkSize = 64 * 1024;

// Not thread-safe: one per worker.
class ChunkPool {
 public:
  explicit ChunkPool(size_t max_cached = 256) : max_cached_(max_cached) {}
  ~ChunkPool() {
    for (char* c : free_) delete[] c;
  }
  ChunkPool(const ChunkPool&) = delete;
  ChunkPool& operator=(const ChunkPool&) = delete;

  char* Get() {
    ++outstanding_;
    if (free_.empty()) return new char[kChunkSize];
    char* c = free_.back();
    free_.pop_back();
    return c;
  }
  void Put(char* c) {
    --outstanding_;
    if (free_.size() < max_cached_) {
      free_.push_back(c);
    } else {
      delete[] c;
    }
  }
  size_t outstanding() const { return outstanding_; }
  size_t cached() const { return free_.size(); }

 private:
  size_t max_cached_;
  size_t outstanding_ = 0;
  std::vector<char*> free_;
};

class ByteQueue {
 public:
  ByteQueue(size_t cap, ChunkPool* pool) : cap_(cap), pool_(pool) {}
  ~ByteQueue() { Clear(); }
  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;

  size_t size() const { return size_; }
  size_t cap() const { return cap_; }
  size_t free_space() const { return size_ >= cap_ ? 0 : cap_ - size_; }
  bool empty() const { return size_ == 0; }

  // Appends all n bytes; callers never ask for more than free_space(), which
  // is how the cap is enforced (recvs are sized by it).
  void Append(const char* data, size_t n) {
    size_ += n;
    while (n > 0) {
      if (chunks_.empty() || chunks_.back().end == kChunkSize) chunks_.push_back({pool_->Get(), 0, 0});
      Chunk& c = chunks_.back();
      size_t take = std::min(n, kChunkSize - c.end);
      std::memcpy(c.data + c.end, data, take);
      c.end += take;
      data += take;
      n -= take;
    }
  }

  // The contiguous bytes at the head (at most one chunk).
  std::span<const char> Front() const {
    if (chunks_.empty()) return {};
    const Chunk& c = chunks_.front();
    return {c.data + c.begin, c.end - c.begin};
  }

  void Consume(size_t n) {
    size_ -= n;
    while (n > 0) {
      Chunk& c = chunks_.front();
      size_t take = std::min(n, c.end - c.begin);
      c.begin += take;
      n -= take;
      if (c.begin == c.end) {
        pool_->Put(c.data);
        chunks_.pop_front();
      }
    }
  }

  void Clear() {
    for (Chunk& c : chunks_) pool_->Put(c.data);
    chunks_.clear();
    size_ = 0;
  }

 private:
  struct Chunk {
    char* data;
    size_t begin;
    size_t end;
  };
  size_t cap_;
  ChunkPool* pool_;
  size_t size_ = 0;
  std::deque<Chunk> chunks_;
};

}  // namespace ringmesh::proxy
