// test_band_scan.cpp built with -march=native: the AVX-512 branches of the kernels it checks.
#include "test_band_scan.cpp"
