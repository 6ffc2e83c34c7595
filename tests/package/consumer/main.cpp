// Consumer of an installed alloy (find_package). Compiles the umbrella header and checks that
// the version macros agree with the CMake package version.
#include <alloy/alloy.hpp>

#include <cstdio>

#if !defined(ALLOY_VERSION_MAJOR) || !defined(ALLOY_VERSION_MINOR) || !defined(ALLOY_VERSION_PATCH)
#error "<alloy/alloy.hpp> does not define ALLOY_VERSION_MAJOR/MINOR/PATCH"
#endif

#if __cplusplus < 202002L
#error "alloy::alloy must require C++20 of its consumers"
#endif

#ifdef EXPECTED_ALLOY_VERSION_MAJOR
static_assert(ALLOY_VERSION_MAJOR == EXPECTED_ALLOY_VERSION_MAJOR &&
                  ALLOY_VERSION_MINOR == EXPECTED_ALLOY_VERSION_MINOR &&
                  ALLOY_VERSION_PATCH == EXPECTED_ALLOY_VERSION_PATCH,
              "alloy/version.hpp disagrees with the installed alloyConfigVersion.cmake");
#endif

int main() {
  std::printf("alloy %d.%d.%d (find_package consumer)\n", ALLOY_VERSION_MAJOR, ALLOY_VERSION_MINOR,
              ALLOY_VERSION_PATCH);
  return 0;
}
