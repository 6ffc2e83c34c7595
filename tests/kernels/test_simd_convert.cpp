#include "simd_convert_cases.hpp"
