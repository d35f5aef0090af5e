// Early return on an error status, Abseil's missing RETURN_IF_ERROR:
//   RM_RETURN_IF_ERROR(ParsePorts(node, &svc.ports));
// `expr` yields an absl::Status; a non-OK one is returned from the caller.
#pragma once

#include "absl/status/status.h"

#define RM_RETURN_IF_ERROR(expr)        \
  do {                                  \
    if (auto _st = (expr); !_st.ok()) { \
      return _st;                       \
    }                                   \
  } while (0)
