// Built with ALLOY_FORCE_SCALAR (tests/CMakeLists.txt: *_scalar.cpp): the scalar stand-ins of
// load_widen / store_narrow pass the same checks.
#include "simd_convert_cases.hpp"

static_assert(alloy::kernels::width<float> == 1);
