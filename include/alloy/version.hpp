// alloy version, kept in step with project(VERSION) in CMakeLists.txt.
#pragma once

#define ALLOY_VERSION_MAJOR 0
#define ALLOY_VERSION_MINOR 1
#define ALLOY_VERSION_PATCH 0

namespace alloy {
inline constexpr const char* version_string = "0.1.0";
}
