#include "userspace/common/snapshot.h"

namespace ringmesh {

const char* ToString(FailMode m) { return m == FailMode::kClosed ? "closed" : "open"; }

const char* ToString(LbPolicy p) {
  switch (p) {
    case LbPolicy::kP2cPeakEwma: return "p2c";
    case LbPolicy::kRoundRobin: return "round_robin";
    case LbPolicy::kRandom: return "random";
    case LbPolicy::kLeastConnections: return "least_connections";
  }
  return "?";
}

const char* ToString(AppProtocol p) {
  switch (p) {
    case AppProtocol::kTcp: return "tcp";
    case AppProtocol::kHttp: return "http";
    case AppProtocol::kHttp2: return "http2";
    case AppProtocol::kGrpc: return "grpc";
  }
  return "?";
}

std::optional<FailMode> ParseFailMode(std::string_view s) {
  if (s == "open") return FailMode::kOpen;
  if (s == "closed") return FailMode::kClosed;
  return std::nullopt;
}

std::optional<LbPolicy> ParseLbPolicy(std::string_view s) {
  if (s == "p2c" || s == "p2c_peak_ewma") return LbPolicy::kP2cPeakEwma;
  if (s == "round_robin") return LbPolicy::kRoundRobin;
  if (s == "random") return LbPolicy::kRandom;
  if (s == "least_connections") return LbPolicy::kLeastConnections;
  return std::nullopt;
}

std::optional<AppProtocol> ParseAppProtocol(std::string_view s) {
  if (s == "tcp") return AppProtocol::kTcp;
  if (s == "http") return AppProtocol::kHttp;
  if (s == "http2") return AppProtocol::kHttp2;
  if (s == "grpc") return AppProtocol::kGrpc;
  return std::nullopt;
}

}  // namespace ringmesh
