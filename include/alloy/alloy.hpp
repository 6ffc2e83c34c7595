// Umbrella header: every public alloy header except the opt-in adapters.
#pragma once

#include <alloy/config.hpp>
#include <alloy/error.hpp>
#include <alloy/version.hpp>

#include <alloy/core/bf16.hpp>
#include <alloy/core/dtype.hpp>
#include <alloy/core/execution.hpp>
#include <alloy/core/fp16.hpp>
#include <alloy/core/matrix_ref.hpp>
#include <alloy/core/preset.hpp>
#include <alloy/core/random.hpp>
#include <alloy/core/tensor.hpp>
#include <alloy/core/tensor_set.hpp>

#include <alloy/methods/breadcrumbs.hpp>
#include <alloy/methods/dare.hpp>
#include <alloy/methods/della.hpp>
#include <alloy/methods/fisher.hpp>
#include <alloy/methods/greedy_soup.hpp>
#include <alloy/methods/interference.hpp>
#include <alloy/methods/karcher.hpp>
#include <alloy/methods/magnitude_prune.hpp>
#include <alloy/methods/model_stock.hpp>
#include <alloy/methods/multislerp.hpp>
#include <alloy/methods/nuslerp.hpp>
#include <alloy/methods/slerp.hpp>
#include <alloy/methods/soup.hpp>
#include <alloy/methods/task_arithmetic.hpp>
#include <alloy/methods/ties.hpp>

#include <alloy/align/apply.hpp>
#include <alloy/align/linear_assignment.hpp>
#include <alloy/align/permutation_spec.hpp>

#include <alloy/lmc/barrier.hpp>
#include <alloy/lmc/interpolation.hpp>

// Opt-in (extra dependencies): alloy/io/*.hpp (alloy::io: nlohmann-json, yaml-cpp),
// alloy/align/{weight_matching,activation_matching,permutation_spec_yaml}.hpp and
// alloy/methods/regmean.hpp (alloy::linalg: BLAS, LAPACK, xtensor-blas),
// alloy/adapters/*.hpp (xtensor, Eigen).
