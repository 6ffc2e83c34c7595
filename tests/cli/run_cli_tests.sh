#!/usr/bin/env bash
# End-to-end tests of the `alloy` command-line tool on small checkpoints.
#
#   tests/cli/run_cli_tests.sh ALLOY MAKE_TEST_CHECKPOINTS [WORK_DIR]
#
# ALLOY is the tool, MAKE_TEST_CHECKPOINTS the helper writing the inputs
# (examples/alloy/make_test_checkpoints.cpp); WORK_DIR (default: a fresh temporary folder,
# removed at the end) holds inputs and outputs. Registered as the ctest test cli/alloy by
# examples/CMakeLists.txt. Checks exit statuses (0 success, 1 merge or I/O error, 2 usage or
# recipe error), that every error is one line on stderr naming the file, tensor or key, the
# dry run, inspect and analyze output, and that a failed merge leaves no output behind.
set -uo pipefail

if (( $# < 2 )); then
  echo "usage: $0 ALLOY MAKE_TEST_CHECKPOINTS [WORK_DIR]" >&2
  exit 2
fi
alloy=$(realpath "$1")
make_checkpoints=$(realpath "$2")
if (( $# >= 3 )); then
  work=$3
  rm -rf "$work"
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/alloy-cli-test.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi

failures=0
checks=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# run EXPECTED_STATUS ARGS...: runs alloy, keeps stdout in $out and stderr in $err.
run() {
  local expected=$1; shift
  checks=$((checks + 1))
  out=$("$alloy" "$@" 2>"$work/stderr")
  status=$?
  err=$(cat "$work/stderr")
  if [[ $status != "$expected" ]]; then
    fail "alloy $* exited with $status, expected $expected; stderr: $err"
  fi
}

# An error is exactly one line on stderr, starting with "alloy: error:", containing $1.
one_error_line() {
  checks=$((checks + 1))
  local errors
  errors=$(grep -c "^alloy: error: " <<<"$err")
  if [[ $(grep -vc "^alloy: warning: " <<<"$err") != 1 || $errors != 1 ]]; then
    fail "expected one error line on stderr, got: $err"
  elif [[ $err != *"$1"* ]]; then
    fail "the error line does not mention '$1': $err"
  fi
}

contains() {  # contains TEXT PART DESCRIPTION
  checks=$((checks + 1))
  [[ $1 == *"$2"* ]] || fail "$3: '$2' not found in: $1"
}

# Merges RECIPE into out_LABEL1 with 1 thread and out_LABEL2 with 2: the bytes must not differ.
same_for_threads() {  # same_for_threads RECIPE LABEL
  run 0 merge "$1" "out_${2}1" --no-progress --threads 1
  run 0 merge "$1" "out_${2}2" --no-progress --threads 2
  checks=$((checks + 1))
  cmp -s "out_${2}1/model.safetensors" "out_${2}2/model.safetensors" || fail "$2: 1 and 2 threads give different bytes"
}

matches() {  # matches TEXT EXTENDED_REGEX DESCRIPTION
  checks=$((checks + 1))
  grep -Eq -- "$2" <<<"$1" || fail "$3: /$2/ does not match: $1"
}

absent() {
  checks=$((checks + 1))
  [[ ! -e $1 ]] || fail "$1 exists but should not"
}

no_leftovers() {  # no temporary folder or file left in $work
  checks=$((checks + 1))
  local left
  left=$(find "$work" -maxdepth 2 -name '*alloy-tmp*' -o -maxdepth 2 -name '*.tmp-*')
  [[ -z $left ]] || fail "temporary files left behind: $left"
}

"$make_checkpoints" "$work" || { echo "FAIL: $make_checkpoints $work" >&2; exit 1; }
cd "$work" || exit 1

cat >ta.yaml <<'EOF'
merge_method: task_arithmetic
base_model: base
models:
  - model: a
    parameters: {weight: 1.0}
  - model: b_sharded
    parameters: {weight: [0.2, 0.8]}
parameters: {lambda: 0.9}
out_dtype: bfloat16
EOF
cat >ties.yaml <<'EOF'
merge_method: ties
base_model: base
models:
  - model: base
  - model: a
    parameters: {weight: 1.0, density: 0.5}
  - model: b
    parameters: {weight: 0.5, density: [{filter: mlp, value: 0.3}, {value: 0.7}]}
tokenizer: {source: base}
EOF

# --- usage errors: exit 2, one line
run 0 --help
contains "$out" "merge" "alloy --help lists merge"
run 0 --version
run 2
one_error_line "subcommand"
run 2 frobnicate
one_error_line "unknown command 'frobnicate'"
run 2 merge ta.yaml out --bogus
one_error_line "--bogus"
run 2 merge ta.yaml out --threads many
one_error_line "--threads"
run 2 merge ta.yaml out --out-shard-size 5XB
one_error_line "--out-shard-size '5XB'"
run 2 merge ta.yaml
one_error_line "OUT_DIR is required"
run 2 merge missing.yaml out
one_error_line "missing.yaml"
absent out

# --- recipe errors: exit 2, naming the key
sed 's/lambda: 0.9/lamda: 0.9/' ta.yaml >typo.yaml
run 2 merge typo.yaml out
one_error_line "parameters.lamda"
sed 's/^models:/modles:/' ta.yaml >typo2.yaml
run 2 merge typo2.yaml out
one_error_line "unknown key 'modles'"
sed 's/density: 0.5/density: 1.5/' ties.yaml >range.yaml
run 2 merge range.yaml out
one_error_line "models[1].parameters.density is 1.5"
cat >stock_peft.yaml <<'EOF'
merge_method: model_stock
base_model: base
models: [{model: a}, {model: b}]
alloy: {preset: peft}
EOF
run 2 merge stock_peft.yaml out
one_error_line "alloy.preset peft"
cat >fisher_nokey.yaml <<'EOF'
merge_method: fisher
models:
  - model: a
    alloy: {fisher: fisher_a.safetensors}
  - model: b
EOF
run 2 merge fisher_nokey.yaml out
one_error_line "models[1] ('b') has no alloy.fisher"
sed 's/alloy: {fisher:/alloy: {fishr:/' fisher_nokey.yaml >fisher_typo.yaml
run 2 merge fisher_typo.yaml out
one_error_line "unknown key 'models[0].alloy.fishr'"
absent out

# --- merge and I/O errors: exit 1, naming the file or tensor, nothing written
sed 's/model: a$/model: nothere/' ties.yaml >missing_model.yaml
run 1 merge missing_model.yaml out
one_error_line "nothere"
sed 's/model: a$/model: bad_shape/' ties.yaml >bad_shape.yaml
run 1 merge bad_shape.yaml out
one_error_line "tensor 'model.layers.1.mlp.up_proj.weight' has shape [40, 16]"
absent out
printf 'not a safetensors file' >garbage.safetensors
sed 's/model: a$/model: garbage.safetensors/' ties.yaml >garbage.yaml
run 1 merge garbage.yaml out
one_error_line "garbage.safetensors"
absent out
run 1 inspect nothing
one_error_line "nothing"

# --- an error in the middle of the merge leaves no output
ALLOY_DEBUG_FAIL_AFTER=3 run 1 merge ties.yaml out --no-progress
one_error_line "ALLOY_DEBUG_FAIL_AFTER"
absent out
no_leftovers
ALLOY_DEBUG_FAIL_AFTER=2 run 1 merge ta.yaml out --no-progress --out-shard-size 2000
absent out
no_leftovers

# --- dry run: the plan, nothing written
run 0 merge ties.yaml out --dry-run
contains "$out" "model.layers.2.mlp.up_proj.weight" "the dry run lists tensors"
contains "$out" "13: 12 merged, 1 copied" "the dry run counts tensors"
contains "$out" "memory" "the dry run estimates memory"
contains "$out" "time" "the dry run estimates time"
contains "$err" "alloy: warning: 'tokenizer'" "the tokenizer key is accepted with a warning"
absent out

# --- merges
run 0 merge ta.yaml out_ta --no-progress --threads 2
contains "$err" "alloy: merged 13 tensors" "the summary line"
for f in model.safetensors config.json tokenizer.json tokenizer_config.json alloy_recipe.yaml; do
  checks=$((checks + 1))
  [[ -f out_ta/$f ]] || fail "out_ta/$f is missing"
done
contains "$(cat out_ta/config.json)" '"torch_dtype": "bfloat16"' "config.json gets the output dtype"
contains "$(cat out_ta/alloy_recipe.yaml)" "$work/b_sharded" "alloy_recipe.yaml has absolute paths"
run 0 inspect out_ta
contains "$out" "13 tensors" "inspect counts tensors"
matches "$out" "^model\.embed_tokens\.weight +BF16 +\[32, 16\] +1024$" "inspect lists name, dtype, shape and bytes"
contains "$out" "extra.step" "inspect lists the integer tensor"
contains "$out" "format: pt" "inspect shows the metadata"
run 2 merge ta.yaml out_ta
one_error_line "already exists"
# The stored recipe merges again to the same bytes, from another folder.
mkdir -p elsewhere
run 0 merge out_ta/alloy_recipe.yaml elsewhere/again --no-progress
checks=$((checks + 1))
cmp -s out_ta/model.safetensors elsewhere/again/model.safetensors || fail "merging alloy_recipe.yaml again differs"
# --sync writes the same files (it only adds the fsyncs).
run 0 merge ta.yaml out_ta_sync --no-progress --sync
checks=$((checks + 1))
cmp -s out_ta/model.safetensors out_ta_sync/model.safetensors || fail "merge --sync differs"

run 0 merge ties.yaml out_ties --no-progress --out-shard-size 3KB --threads 1
checks=$((checks + 1))
[[ -f out_ties/model.safetensors.index.json && ! -f out_ties/model.safetensors ]] ||
  fail "--out-shard-size 3KB should give shards and an index: $(ls out_ties)"
run 0 inspect out_ties
matches "$out" "in [2-9] files" "inspect reads the shards"
run 0 inspect out_ties/model.safetensors.index.json
run 0 inspect base/model.safetensors

# Threads do not change the bytes.
same_for_threads ties.yaml ties

# dare_ties under preset paper: the model-wide zero vote in a planning pass.
cat >dare_paper.yaml <<'EOF'
merge_method: dare_ties
base_model: base
models:
  - model: a
    parameters: {weight: 1.0, density: 0.5}
  - model: b_sharded
    parameters: {weight: 0.5, density: [{filter: mlp, value: 0.3}, {value: 0.7}]}
parameters: {consensus_method: count}
alloy: {preset: paper, seed: 3}
EOF
same_for_threads dare_paper.yaml dare_paper

# --- model_stock and fisher (Fisher files: one per model, with the models' tensor names)
cat >stock.yaml <<'EOF'
merge_method: model_stock
base_model: base
models:
  - model: base
  - model: a
  - model: b_sharded
parameters: {filter_wise: [{filter: mlp, value: true}, {value: false}]}
EOF
same_for_threads stock.yaml stock
run 0 inspect out_stock1
contains "$out" "model.layers.2.mlp.up_proj.weight" "inspect lists the model_stock output"

# write_fisher FILE VALUE [bad]: an F32 safetensors file holding VALUE (4 bytes as printf
# escapes) in every floating tensor of make_test_checkpoints' models; "bad" gives layer 1's
# up_proj the shape [40, 16].
write_fisher() {
  local file=$1 value=$2 bad=${3:-} header='{' offset=0 entry name shape n i len
  local -a tensors=("model.embed_tokens.weight:32,16")
  for i in 0 1 2; do
    tensors+=("model.layers.$i.self_attn.q_proj.weight:16,16" "model.layers.$i.mlp.up_proj.weight:48,16"
              "model.layers.$i.input_layernorm.weight:16")
  done
  tensors+=("model.norm.weight:16" "lm_head.weight:32,16")
  for entry in "${tensors[@]}"; do
    name=${entry%%:*}
    shape=${entry#*:}
    [[ -n $bad && $name == model.layers.1.mlp.up_proj.weight ]] && shape=40,16
    n=$((${shape/,/*}))
    header+="\"$name\":{\"dtype\":\"F32\",\"shape\":[$shape],\"data_offsets\":[$offset,$((offset + 4 * n))]},"
    offset=$((offset + 4 * n))
  done
  header="${header%,}}"
  while (( ${#header} % 8 )); do header+=' '; done
  len=${#header}
  {
    for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(((len >> (8 * i)) & 255)))"; done
    printf '%s' "$header"
    printf "$value%.0s" $(seq 1 $((offset / 4)))
  } >"$file"
}
write_fisher fisher_a.safetensors '\x00\x00\x80\x3f'  # 1.0
write_fisher fisher_b.safetensors '\x00\x00\x40\x40'  # 3.0
write_fisher fisher_bad.safetensors '\x00\x00\x40\x40' bad
cat >fisher.yaml <<'EOF'
merge_method: fisher
models:
  - model: a
    alloy: {fisher: fisher_a.safetensors}
  - model: b_sharded
    parameters: {weight: 2}
    alloy: {fisher: fisher_b.safetensors}
parameters: {normalize: true}
EOF
run 0 merge fisher.yaml out_fisher --no-progress
run 0 inspect out_fisher
contains "$out" "extra.step" "the fisher merge copies the integer tensor"
contains "$(cat out_fisher/alloy_recipe.yaml)" "$work/fisher_b.safetensors" "alloy_recipe.yaml has the Fisher paths"
mkdir -p elsewhere
run 0 merge out_fisher/alloy_recipe.yaml elsewhere/fisher_again --no-progress
checks=$((checks + 1))
cmp -s out_fisher/model.safetensors elsewhere/fisher_again/model.safetensors || fail "fisher: the stored recipe differs"
sed 's/fisher_b.safetensors/fisher_bad.safetensors/' fisher.yaml >fisher_shape.yaml
run 1 merge fisher_shape.yaml out
one_error_line "models[1].alloy.fisher 'fisher_bad.safetensors': tensor 'model.layers.1.mlp.up_proj.weight' has shape [40, 16]"
sed 's/fisher_b.safetensors/fisher_none.safetensors/' fisher.yaml >fisher_missing.yaml
run 1 merge fisher_missing.yaml out
one_error_line "fisher_none.safetensors"
absent out

# --- analyze
run 0 analyze ties.yaml
contains "$out" "sign conflicts" "analyze reports sign conflicts"
contains "$out" "model.layers.0.mlp.up_proj.weight" "analyze reports per tensor"
run 0 analyze ties.yaml --density 0.2
contains "$out" "trimming at --density 0.2" "analyze --density replaces the recipe's densities"
run 0 analyze ties.yaml --threads 1
analyze1=$out
run 0 analyze ties.yaml --threads 2
checks=$((checks + 1))
[[ $analyze1 == "$out" ]] || fail "analyze: 1 and 2 threads print different figures"
run 2 analyze ties.yaml --density 2
one_error_line "--density"
run 2 analyze missing.yaml
one_error_line "missing.yaml"

# --- align. The tool stops OpenBLAS's worker pool when it starts (main.cpp), and the first
# threaded product (these layers are large enough) starts it again: the result must be the
# same as with a single BLAS thread.
run 0 align mlp/a.safetensors mlp/b.safetensors mlp_aligned.safetensors --spec mlp/spec.yaml
contains "$out" "group P1" "align reports its groups"
checks=$((checks + 1))
OPENBLAS_NUM_THREADS=1 "$alloy" align mlp/a.safetensors mlp/b.safetensors mlp_aligned_1.safetensors \
  --spec mlp/spec.yaml >/dev/null 2>&1 || fail "align with one BLAS thread"
checks=$((checks + 1))
cmp -s mlp_aligned.safetensors mlp_aligned_1.safetensors || fail "align: the BLAS pool changes the result"

no_leftovers
echo "$checks checks, $failures failures"
(( failures == 0 ))
