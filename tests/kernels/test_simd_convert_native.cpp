// The conversion cases built with -march=native: the AVX-512/AVX2 register conversions.
#include "simd_convert_cases.hpp"
