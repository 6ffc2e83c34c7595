// test_task_vector_fused.cpp built with -march=native: the AVX-512 branches of the kernels it checks.
#include "test_task_vector_fused.cpp"
