// Built with ALLOY_FORCE_SCALAR (tests/CMakeLists.txt: *_scalar.cpp).
#include "stream_paths_cases.hpp"

static_assert(alloy::kernels::width<float> == 1);
