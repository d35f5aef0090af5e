// Root-only tests: skip with the reason when not root, unless
// RINGMESH_REQUIRE_ROOT_TESTS=1 (set by scripts/test as root, hence in CI),
// where a skip would hide a missing feature and fails instead.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#define RINGMESH_REQUIRE_ROOT()                                                              \
  do {                                                                                       \
    if (geteuid() != 0) {                                                                    \
      const char* req = std::getenv("RINGMESH_REQUIRE_ROOT_TESTS");                          \
      if (req && std::string(req) == "1") FAIL() << "root required (RINGMESH_REQUIRE_ROOT_TESTS=1)"; \
      GTEST_SKIP() << "needs root: loads BPF, makes cgroups and network namespaces";        \
    }                                                                                        \
  } while (0)
