// The driver path cases built with -march=native: the AVX-512/AVX2 register conversions.
#include "stream_paths_cases.hpp"
