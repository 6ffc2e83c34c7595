#!/usr/bin/env bash
# Times `alloy merge` on synthetic Llama-shaped bf16 checkpoints (a base and three
# fine-tunes), for task_arithmetic and ties, at two model sizes, and reports bandwidth, its
# ratio to same-run copy baselines, and peak resident memory. Not part of CI.
#
#   benchmarks/merge_checkpoints.sh
#
# What it does:
#   1. builds `alloy` and make_llama_checkpoint in a Release build folder (-march=native);
#   2. generates the checkpoints once (benchmarks/make_llama_checkpoint.cpp: TinyLlama-1.1B
#      shapes, vocab 32000, hidden 2048, MLP 5632; 10 layers = 0.57B parameters and 22 layers =
#      1.1B, so both sizes share their largest tensor) and caches them;
#   3. drops every input from the page cache (dd iflag=nocache) and reads it once with cat, so
#      that the files are in the page cache (the timings assume a warm cache) and cached the
#      way the kernel caches a file read from disk: in 2 MiB folios on Linux 6.x. A file
#      cached piecemeal in 4 KiB folios (by an earlier reader's MADV_SEQUENTIAL read-ahead,
#      say) reads at half the rate, whoever reads it (docs/performance.md);
#      ALLOY_BENCH_RECACHE=0 keeps the cache as it is. Then syncs so that earlier dirty pages
#      do not throttle the writes;
#   4. per size and method, runs the merge ALLOY_BENCH_RUNS times (hyperfine when installed,
#      else a loop), keeps the best time, and measures the peak resident set size with
#      /usr/bin/time -v;
#   5. measures three same-run baselines: a multi-threaded memcpy of 1 GiB (memory bandwidth,
#      counting read + write bytes), a file copy of one input with dd to the output's file
#      system (the page-cache read + new-file write path a merge also takes), and the time to
#      merely read every input the way alloy merge does (memory maps, dropped behind the
#      read in 16 MiB steps, on the same threads: make_llama_checkpoint --read-bandwidth), and to merely write the
#      output (pwrite of 2 MiB pieces to a new file: --write-bandwidth). Together they give a
#      floor for any merge on C cores that reads as alloy does: the read keeps every core
#      busy for its time, and the write (serialized on the file: two threads write no faster
#      than one) adds its time divided by C, so floor = read alone + written alone / C;
#      and the library's method alone over the same maps, with the recipe's parameters and
#      no output file (make_llama_checkpoint --method-time), which separates the method's
#      own cost from the engine's and the write's;
#   6. prints a table: time, (input + output bytes) / time, the ratios to the first two
#      baselines, the read-alone time and its ratio to the merge's time, the written-alone
#      time, the floor and its bytes' ratio to memcpy (the best ratio a merge could reach on
#      this machine), the method-alone time and its bytes' ratio to memcpy, and the peak
#      RSS; and writes it to
#      $cache/results.md.
#
# Environment:
#   ALLOY_BENCH_CACHE    checkpoint cache (default: build/bench-cache); about 13 GB
#   ALLOY_BENCH_OUT      where outputs are written (default: $ALLOY_BENCH_CACHE/out)
#   ALLOY_BENCH_BUILD    build folder (default: build-bench-cli)
#   ALLOY_BENCH_RUNS     runs per case (default 3)
#   ALLOY_BENCH_THREADS  alloy merge --threads (default 0: every core)
#   ALLOY_BENCH_SIZES    "label:layers ..." (default "0.57B:10 1.1B:22")
#   ALLOY_BENCH_METHODS  (default "task_arithmetic ties")
#   ALLOY_BENCH_NATIVE   0 to build without -march=native
#   ALLOY_BENCH_RECACHE  0 to read the inputs into the page cache without dropping them first
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cache="${ALLOY_BENCH_CACHE:-$root/build/bench-cache}"
outdir="${ALLOY_BENCH_OUT:-$cache/out}"
build="${ALLOY_BENCH_BUILD:-$root/build-bench-cli}"
runs="${ALLOY_BENCH_RUNS:-3}"
threads="${ALLOY_BENCH_THREADS:-0}"
sizes="${ALLOY_BENCH_SIZES:-0.57B:10 1.1B:22}"
methods="${ALLOY_BENCH_METHODS:-task_arithmetic ties}"
native="${ALLOY_BENCH_NATIVE:-1}"
recache="${ALLOY_BENCH_RECACHE:-1}"

say() { echo "==> $*" >&2; }

# --- 1. build
flags=()
[[ $native == 1 ]] && flags=(-DCMAKE_CXX_FLAGS=-march=native)
gen=()
if [[ ! -f $build/CMakeCache.txt ]] && command -v ninja >/dev/null 2>&1; then gen=(-G Ninja); fi
say "building alloy and make_llama_checkpoint in $build"
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DALLOY_BUILD_TESTS=OFF \
  -DALLOY_BUILD_EXAMPLES=ON -DALLOY_BUILD_BENCHMARKS=ON -DALLOY_INSTALL=OFF "${flags[@]}" >/dev/null
cmake --build "$build" --target alloy_tool make_llama_checkpoint -j "$(nproc)" >/dev/null
alloy="$build/examples/alloy"
gen_tool="$build/benchmarks/make_llama_checkpoint"

# --- 2. checkpoints, cached
mkdir -p "$cache" "$outdir"
for entry in $sizes; do
  layers=${entry#*:}
  dir="$cache/llama-${layers}L"
  for m in 0 1 2 3; do
    stamp="$dir/m$m/.complete"
    want="layers=$layers model=$m generator=1"
    if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
      say "generating $dir/m$m"
      rm -rf "$dir/m$m"
      "$gen_tool" "$dir/m$m" --layers "$layers" --model "$m" >&2
      echo "$want" >"$stamp"
    fi
  done
  cat >"$dir/task_arithmetic.yaml" <<'EOF'
merge_method: task_arithmetic
base_model: m0
models:
  - model: m1
    parameters: {weight: 0.5}
  - model: m2
    parameters: {weight: 0.3}
  - model: m3
    parameters: {weight: 0.2}
parameters: {lambda: 1.0}
EOF
  cat >"$dir/ties.yaml" <<'EOF'
merge_method: ties
base_model: m0
models:
  - model: m1
    parameters: {weight: 0.5, density: 0.5}
  - model: m2
    parameters: {weight: 0.3, density: 0.5}
  - model: m3
    parameters: {weight: 0.2, density: 0.5}
EOF
done

bytes_of() { stat -c %s "$1"; }
seconds_now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }

memcpy_bw() { "$gen_tool" --memcpy-bandwidth --threads "$threads" | awk '{print $2}'; }
read_bw() { "$gen_tool" --read-bandwidth "$@" --threads "$threads" 2>/dev/null | awk '{print $2}'; }
write_bw() { "$gen_tool" --write-bandwidth "$outdir" --mib "$1" --threads "$threads" | awk '{print $2}'; }
cores=$threads
[[ $cores == 0 ]] && cores=$(nproc)
# The library's method alone (one file per model; "-" for sharded inputs).
method_time() {
  local dir=$1 method=$2 files=()
  for m in 0 1 2 3; do
    [[ -f "$dir/m$m/model.safetensors" ]] || { echo "-"; return; }
    files+=("$dir/m$m/model.safetensors")
  done
  "$gen_tool" --method-time "$method" "${files[@]}" --threads "$threads" | awk '{print $2}'
}

# Read + write bytes per second of copying one cached input file to the output file system.
file_copy_bw() {
  local src=$1 dst="$outdir/dd-copy" best=""
  for _ in 1 2; do
    rm -f "$dst"
    sync
    local t0 t1
    t0=$(seconds_now)
    dd if="$src" of="$dst" bs=8M status=none
    t1=$(seconds_now)
    local bw
    bw=$(calc "2 * $(bytes_of "$src") / ($t1 - $t0)")
    if [[ -z $best ]] || awk "BEGIN { exit !($bw > $best) }"; then best=$bw; fi
  done
  rm -f "$dst"
  echo "$best"
}

# --- 3-5. runs
table="| model | method | time (s) | in + out | GB/s | memcpy GB/s | ratio | file copy GB/s | ratio | inputs read alone (s) | ratio | output written alone (s) | floor (s) | its ratio to memcpy | method alone (s) | its ratio to memcpy | peak RSS |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for entry in $sizes; do
  label=${entry%%:*}
  layers=${entry#*:}
  dir="$cache/llama-${layers}L"
  say "warming the page cache for $label"
  if [[ $recache == 1 ]]; then
    for f in "$dir"/m*/model*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done
  fi
  cat "$dir"/m*/model*.safetensors >/dev/null
  in_bytes=0
  for m in 0 1 2 3; do
    for f in "$dir/m$m"/model*.safetensors; do in_bytes=$((in_bytes + $(bytes_of "$f"))); done
  done
  for method in $methods; do
    out="$outdir/merged-$label-$method"
    rm -rf "$out"
    sync
    copy=$(memcpy_bw)
    fcopy=$(file_copy_bw "$dir/m0/model.safetensors")
    read_alone=$(calc "$in_bytes / $(read_bw "$dir"/m*/model*.safetensors)")
    alone=$(method_time "$dir" "$method")
    best=""
    if command -v hyperfine >/dev/null 2>&1; then
      say "$label $method: hyperfine, $runs runs"
      hyperfine --runs "$runs" --prepare "rm -rf '$out'; sync" --export-json "$outdir/hf.json" \
        "'$alloy' merge '$dir/$method.yaml' '$out' --no-progress --threads $threads" >&2
      best=$(python3 -c "import json; print(min(json.load(open('$outdir/hf.json'))['results'][0]['times']))")
    else
      for ((r = 1; r <= runs; r++)); do
        rm -rf "$out"
        sync
        t0=$(seconds_now)
        "$alloy" merge "$dir/$method.yaml" "$out" --no-progress --threads "$threads" 2>/dev/null
        t1=$(seconds_now)
        s=$(calc "$t1 - $t0")
        say "$label $method run $r: $s s"
        if [[ -z $best ]] || awk "BEGIN { exit !($s < $best) }"; then best=$s; fi
      done
    fi
    rm -rf "$out"
    sync
    rss_kb=$(/usr/bin/time -v "$alloy" merge "$dir/$method.yaml" "$out" --no-progress --threads "$threads" 2>&1 >/dev/null |
      awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}')
    out_bytes=0
    for f in "$out"/model*.safetensors; do out_bytes=$((out_bytes + $(bytes_of "$f"))); done
    rm -rf "$out"
    sync
    written_alone=$(calc "$out_bytes / $(write_bw $(((out_bytes + 1048575) >> 20)))")
    floor=$(calc "$read_alone + $written_alone / $cores")
    traffic=$((in_bytes + out_bytes))
    bw=$(calc "$traffic / $best / 1e9")
    alone_ratio="-"
    [[ $alone != "-" ]] && alone_ratio=$(calc "$traffic / $alone / $copy")
    row="| $label | $method | $best | $(calc "$traffic / 1e9") GB | $bw | $(calc "$copy / 1e9") | $(calc "$traffic / $best / $copy") | $(calc "$fcopy / 1e9") | $(calc "$traffic / $best / $fcopy") | $read_alone | $(calc "$read_alone / $best") | $written_alone | $floor | $(calc "$traffic / $floor / $copy") | $alone | $alone_ratio | $(calc "$rss_kb / 1024") MiB |"
    say "$row"
    table+=$'\n'"$row"
  done
done

{
  echo "alloy merge on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), threads=$threads, best of $runs runs, warm page cache, outputs in $outdir"
  echo
  echo "$table"
} | tee "$cache/results.md"
