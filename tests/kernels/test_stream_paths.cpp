#include "stream_paths_cases.hpp"
