// The driver cases built with -march=native (the widest SIMD of the build machine).
#include "stream_cases.hpp"
