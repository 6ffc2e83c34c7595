// test_topk_heavy.cpp built with -march=native: the AVX-512 branches of the kernels it checks.
#include "test_topk_heavy.cpp"
