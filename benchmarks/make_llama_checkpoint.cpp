// make_llama_checkpoint: synthetic checkpoints with the tensor names and shapes of a
// Llama-style model, for benchmarks/merge_checkpoints.sh.
//
//   make_llama_checkpoint OUT_DIR [--model I] [--layers L] [--hidden H] [--intermediate F]
//                         [--vocab V] [--kv-dim K] [--dtype bf16|f16|f32]
//   make_llama_checkpoint --memcpy-bandwidth [--threads T] [--mib M]
//   make_llama_checkpoint --read-bandwidth FILE... [--threads T] [--read-mode engine|keep|pread]
//   make_llama_checkpoint --write-bandwidth DIR [--threads T] [--mib M]
//   make_llama_checkpoint --method-time task_arithmetic|ties BASE M1 M2 M3 [--threads T]
//
// Defaults are TinyLlama-1.1B's shapes (22 layers, hidden 2048, MLP 5632, vocab 32000,
// grouped-query attention with k/v projections of 256 rows): 1.1 billion parameters, 2.2 GB
// in bf16. Model 0 is the base: values uniform in +-0.035 (a standard deviation of 0.02);
// model I > 0 is the base plus a fine-tuning delta uniform in +-0.0035, different for each I.
// Values are a pure function of (tensor, element, model), so a checkpoint is rebuilt
// byte-identical. OUT_DIR gets model.safetensors (or 5 GB shards and an index) and a
// config.json.
//
// --memcpy-bandwidth measures the same-run memory baseline of the merge benchmark: T threads
// (default: every core) each copying its part of an M MiB buffer (default 1024) with memcpy,
// best of 5, printed as "bytes_per_second <read + write bytes per second>".
//
// --read-bandwidth measures how fast the merge's inputs can merely be read: T threads take
// 2 MiB ranges (a work item of 2^20 bf16 elements), each range of every file in turn, and
// sum one word per cache line; best of 3, printed as "bytes_per_second <read bytes per
// second>". --read-mode engine (the default) reads as `alloy merge` reads a chunked tensor:
// through the memory maps, dropping them behind the finished ranges in 16 MiB steps
// (merge_engine's release_behind); keep maps without dropping anything (the resident set
// grows to the files' size: a floor for reading through maps); pread copies each range
// into a buffer of its thread (no maps). A merge cannot take less time than reading.
//
// --write-bandwidth measures the output side: T threads pwrite a new M MiB file (default
// 1024) in DIR, 2 MiB at a time, as the engine writes its chunks; best of 3, printed as
// "bytes_per_second <written bytes per second>". The file is removed after each run.
//
// --method-time times the library's method alone over the same inputs: every tensor of the
// four checkpoint files (memory maps, kept for the run) merged with alloy::task_arithmetic
// or alloy::ties (mergekit preset) and the benchmark recipes' parameters (weights 0.5, 0.3,
// 0.2, density 0.5) on T threads, into one reused output buffer that is never written to a
// file; best of 3, printed as "seconds <s>". The merge's time less this is what its reads
// through the engine and its output write cost. The program sets glibc's allocator as
// `alloy` does (freed heap memory kept), so the method runs under the tool's conditions.
#include <alloy/core/bf16.hpp>
#include <alloy/core/execution.hpp>
#include <alloy/core/fp16.hpp>
#include <alloy/io/checkpoint.hpp>
#include <alloy/io/mapped_file.hpp>
#include <alloy/io/merge_engine.hpp>
#include <alloy/io/safetensors.hpp>
#include <alloy/methods/task_arithmetic.hpp>
#include <alloy/methods/ties.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace {

namespace fs = std::filesystem;

struct shape_config {
  std::size_t layers = 22, hidden = 2048, intermediate = 5632, vocab = 32000, kv_dim = 256;
  alloy::dtype type = alloy::dtype::bf16;
};

std::vector<alloy::io::tensor_spec> llama_tensors(const shape_config& c) {
  std::vector<alloy::io::tensor_spec> t;
  const auto h = c.hidden;
  t.push_back({"model.embed_tokens.weight", c.type, {c.vocab, h}});
  for (std::size_t l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "self_attn.q_proj.weight", c.type, {h, h}});
    t.push_back({p + "self_attn.k_proj.weight", c.type, {c.kv_dim, h}});
    t.push_back({p + "self_attn.v_proj.weight", c.type, {c.kv_dim, h}});
    t.push_back({p + "self_attn.o_proj.weight", c.type, {h, h}});
    t.push_back({p + "mlp.gate_proj.weight", c.type, {c.intermediate, h}});
    t.push_back({p + "mlp.up_proj.weight", c.type, {c.intermediate, h}});
    t.push_back({p + "mlp.down_proj.weight", c.type, {h, c.intermediate}});
    t.push_back({p + "input_layernorm.weight", c.type, {h}});
    t.push_back({p + "post_attention_layernorm.weight", c.type, {h}});
  }
  t.push_back({"model.norm.weight", c.type, {h}});
  t.push_back({"lm_head.weight", c.type, {c.vocab, h}});
  return t;
}

// A uniform in [-1, 1) from (tensor, element, stream): splitmix64.
inline float uniform(std::uint64_t tensor, std::uint64_t i, std::uint64_t stream) {
  std::uint64_t z = (tensor << 40) ^ i ^ (stream * 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<std::int64_t>(z >> 40) - (1 << 23)) * (1.0f / (1 << 23));
}

template <class T>
void fill(T* out, std::size_t begin, std::size_t end, std::uint64_t tensor, std::uint64_t model) {
  for (std::size_t i = begin; i < end; ++i) {
    float v = 0.0346f * uniform(tensor, i, 0);
    if (model != 0) v += 0.00346f * uniform(tensor, i, model);
    out[i] = T(v);
  }
}

int write_model(const fs::path& out, const shape_config& c, std::uint64_t model) {
  fs::create_directories(out);
  const auto specs = llama_tensors(c);
  alloy::io::checkpoint_writer w(out, specs, {{"format", "pt"}});
  const std::size_t es = alloy::dtype_size(c.type);
  std::vector<std::byte> buf;
  std::uint64_t params = 0;
  for (std::size_t j = 0; j < specs.size(); ++j) {
    std::size_t n = 1;
    for (auto d : specs[j].shape) n *= d;
    params += n;
    buf.resize(n * es);
    const std::size_t chunk = std::size_t{1} << 20;
    alloy::parallel_for((n + chunk - 1) / chunk, {}, [&](std::size_t k) {
      const std::size_t b = k * chunk, e = std::min(n, b + chunk);
      switch (c.type) {
        case alloy::dtype::bf16: fill(reinterpret_cast<alloy::bf16*>(buf.data()), b, e, j, model); break;
        case alloy::dtype::f16: fill(reinterpret_cast<alloy::fp16*>(buf.data()), b, e, j, model); break;
        default: fill(reinterpret_cast<float*>(buf.data()), b, e, j, model); break;
      }
    });
    w.write(specs[j].name, std::span<const std::byte>(buf.data(), buf.size()));
  }
  w.commit();
  std::ofstream cfg(out / "config.json");
  cfg << "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n  \"hidden_size\": "
      << c.hidden << ",\n  \"intermediate_size\": " << c.intermediate << ",\n  \"num_hidden_layers\": " << c.layers
      << ",\n  \"vocab_size\": " << c.vocab << ",\n  \"torch_dtype\": \""
      << (c.type == alloy::dtype::bf16  ? "bfloat16"
          : c.type == alloy::dtype::f16 ? "float16"
                                        : "float32")
      << "\"\n}\n";
  std::printf("%s: %llu parameters, %llu bytes of tensor data in %zu file%s\n", out.string().c_str(),
              static_cast<unsigned long long>(params), static_cast<unsigned long long>(w.total_size()), w.shard_count(),
              w.shard_count() == 1 ? "" : "s");
  return 0;
}

int memcpy_bandwidth(unsigned threads, std::size_t mib) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t n = mib << 20;
  std::unique_ptr<char[]> a(new char[n]), b(new char[n]);
  const std::size_t part = n / threads;
  auto each = [&](auto&& f) {
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] { f(t * part, t + 1 == threads ? n - t * part : part); });
    for (auto& th : pool) th.join();
  };
  each([&](std::size_t off, std::size_t len) {  // first touch in the thread that copies
    std::memset(a.get() + off, 1, len);
    std::memset(b.get() + off, 2, len);
  });
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    each([&](std::size_t off, std::size_t len) { std::memcpy(b.get() + off, a.get() + off, len); });
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  volatile char sink = b[n / 2];
  (void)sink;
  std::printf("bytes_per_second %.0f\n", 2.0 * static_cast<double>(n) / best);
  return 0;
}

// How --read-bandwidth reads the files (see the top of the file).
enum class read_mode { engine, keep, pread };

std::uint64_t sum_lines(const std::byte* p, std::size_t n) {  // one 8-byte word per cache line
  std::uint64_t w[8] = {}, acc = 0;
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (std::size_t k = 0; k < 8; ++k) {
      std::uint64_t v;
      std::memcpy(&v, p + i + 8 * k, 8);
      w[k] += v;
    }
  for (; i < n; ++i) acc += static_cast<std::uint64_t>(p[i]);
  for (auto v : w) acc += v;
  return acc;
}

int read_bandwidth(unsigned threads, const std::vector<std::string>& files, read_mode mode) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  if (files.empty()) throw std::runtime_error("--read-bandwidth needs files");
  constexpr std::size_t range = std::size_t{2} << 20;  // a work item of 2^20 bf16 elements
  constexpr std::size_t step = std::size_t{16} << 20;  // merge_engine's release step
  double best = 1e30;
  std::uint64_t total = 0, sum = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<alloy::io::mapped_file> maps;
    std::vector<alloy::io::detail::unique_fd> fds;
    std::vector<std::size_t> sizes;
    for (const auto& f : files) {
      if (mode == read_mode::pread) {
        fds.emplace_back(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fds.back()) throw std::runtime_error("cannot open '" + f + "'");
        sizes.push_back(static_cast<std::size_t>(fs::file_size(f)));
      } else {
        sizes.push_back(maps.emplace_back(f).size());
      }
    }
    std::size_t ranges = 0;
    total = 0;
    for (const auto n : sizes) {
      ranges = std::max(ranges, (n + range - 1) / range);
      total += n;
    }
    alloy::io::detail::release_behind behind(sizes.size());
    std::atomic<std::size_t> next{0};
    std::atomic<std::uint64_t> sums{0};
    std::atomic<bool> failed{false};
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&] {
        std::unique_ptr<std::byte[]> buf(mode == read_mode::pread ? new std::byte[range] : nullptr);
        std::uint64_t acc = 0;
        for (std::size_t r; (r = next.fetch_add(1)) < ranges;)
          for (std::size_t i = 0; i < sizes.size(); ++i) {
            const std::size_t first = r * range;
            if (first >= sizes[i]) continue;
            const std::size_t n = std::min(range, sizes[i] - first);
            if (mode == read_mode::pread) {
              if (::pread(fds[i].get(), buf.get(), n, static_cast<off_t>(first)) != static_cast<ssize_t>(n)) failed = true;
              acc += sum_lines(buf.get(), n);
              continue;
            }
            acc += sum_lines(maps[i].data() + first, n);
            if (mode == read_mode::keep) continue;
            // As merge_engine::run drops a chunked tensor's inputs behind its finished items.
            const auto d = behind.finished(i, sizes[i], range, first, step);
            if (d.end)
              maps[i].release(maps[i].bytes().subspan(d.first, d.count));
            else if (d.count != 0)
              maps[i].release_passed(maps[i].bytes().subspan(d.first, d.count));
          }
        sums += acc;
      });
    for (auto& th : pool) th.join();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (failed) throw std::runtime_error("a short read");
    sum += sums;
  }
  std::printf("bytes_per_second %.0f\n", static_cast<double>(total) / best);
  std::fprintf(stderr, "(checksum %llu)\n", static_cast<unsigned long long>(sum));
  return 0;
}

// T threads write a new file of M MiB in DIR with pwrite, 2 MiB (a work item's output) at a
// time from a buffer each; best of 3, the file removed and the disk synced (untimed) after
// each, so that no run waits on the previous one's write-back.
int write_bandwidth(unsigned threads, const fs::path& dir, std::size_t mib) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  constexpr std::size_t range = std::size_t{2} << 20;
  const std::size_t n = mib << 20, ranges = (n + range - 1) / range;
  const fs::path file = dir / "alloy-write-bandwidth.tmp";
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    alloy::io::detail::unique_fd fd(::open(file.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644));
    if (!fd) throw std::runtime_error("cannot create '" + file.string() + "'");
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        std::unique_ptr<std::byte[]> buf(new std::byte[range]);
        std::memset(buf.get(), static_cast<int>(t + 1), range);
        for (std::size_t r; (r = next.fetch_add(1)) < ranges;) {
          const std::size_t first = r * range;
          if (alloy::io::detail::pwrite_all(fd.get(), buf.get(), std::min(range, n - first), first) != 0) failed = true;
        }
      });
    for (auto& th : pool) th.join();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    fd.reset();
    fs::remove(file);
    ::sync();
    if (failed) throw std::runtime_error("cannot write '" + file.string() + "'");
  }
  std::printf("bytes_per_second %.0f\n", static_cast<double>(n) / best);
  return 0;
}

int method_time(const std::string& method, unsigned threads, const std::vector<std::string>& files) {
  if (method != "task_arithmetic" && method != "ties") throw std::runtime_error("--method-time: task_arithmetic or ties");
  if (files.size() != 4) throw std::runtime_error("--method-time needs 4 files: the base and 3 models");
  std::vector<alloy::io::safetensors_file> in;
  for (const auto& f : files) in.emplace_back(f);
  const std::vector<double> weights{0.5, 0.3, 0.2};
  const alloy::execution ex{.threads = threads};
  std::unique_ptr<std::byte[]> out;
  std::size_t capacity = 0;
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& e : in[0].entries()) {
      if (!alloy::is_floating(e.type)) continue;
      if (e.bytes() > capacity) {
        capacity = e.bytes();
        out.reset(new std::byte[capacity]);
      }
      const alloy::tensor_view models[] = {in[1].view(e.name), in[2].view(e.name), in[3].view(e.name)};
      const alloy::mutable_tensor_view o{out.get(), e.elements, e.type};
      if (method == "ties")
        alloy::ties(in[0].view(e), models, weights, o, {.density = 0.5, .exec = ex});
      else
        alloy::task_arithmetic(in[0].view(e), models, weights, o, {.exec = ex});
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("seconds %.4f\n", best);
  return 0;
}

std::size_t number(const char* s, const char* what) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (!s[0] || *end) throw std::runtime_error(std::string(what) + " needs a number, not '" + s + "'");
  return static_cast<std::size_t>(v);
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // As `alloy` does (examples/alloy/main.cpp): freed heap memory is kept, so that
  // --method-time times the method under the tool's allocator settings.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  try {
    shape_config c;
    std::uint64_t model = 0;
    unsigned threads = 0;
    std::size_t mib = 1024;
    bool bandwidth = false, read = false;
    std::string write_dir;
    read_mode mode = read_mode::engine;
    std::string out, method;
    std::vector<std::string> files;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> const char* {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--model")
        model = number(next(), "--model");
      else if (a == "--layers")
        c.layers = number(next(), "--layers");
      else if (a == "--hidden")
        c.hidden = number(next(), "--hidden");
      else if (a == "--intermediate")
        c.intermediate = number(next(), "--intermediate");
      else if (a == "--vocab")
        c.vocab = number(next(), "--vocab");
      else if (a == "--kv-dim")
        c.kv_dim = number(next(), "--kv-dim");
      else if (a == "--threads")
        threads = static_cast<unsigned>(number(next(), "--threads"));
      else if (a == "--mib")
        mib = number(next(), "--mib");
      else if (a == "--memcpy-bandwidth")
        bandwidth = true;
      else if (a == "--read-bandwidth")
        read = true;
      else if (a == "--write-bandwidth")
        write_dir = next();
      else if (a == "--read-mode") {
        const std::string m = next();
        mode = m == "engine"  ? read_mode::engine
               : m == "keep"  ? read_mode::keep
               : m == "pread" ? read_mode::pread
                              : throw std::runtime_error("--read-mode: engine, keep or pread");
      }
      else if (a == "--method-time") {
        method = next();
        read = true;  // the files follow
      }
      else if (a == "--dtype") {
        const std::string t = next();
        c.type = t == "bf16"  ? alloy::dtype::bf16
                 : t == "f16" ? alloy::dtype::f16
                 : t == "f32" ? alloy::dtype::f32
                              : throw std::runtime_error("--dtype: bf16, f16 or f32");
      } else if (!a.empty() && a[0] != '-' && read)
        files.push_back(a);
      else if (!a.empty() && a[0] != '-' && out.empty())
        out = a;
      else
        throw std::runtime_error("unknown argument '" + a + "'");
    }
    if (bandwidth) return memcpy_bandwidth(threads, mib);
    if (!write_dir.empty()) return write_bandwidth(threads, write_dir, mib);
    if (!method.empty()) return method_time(method, threads, files);
    if (read) return read_bandwidth(threads, files, mode);
    if (out.empty()) throw std::runtime_error("usage: make_llama_checkpoint OUT_DIR [options] (see the source)");
    return write_model(out, c, model);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_llama_checkpoint: %s\n", e.what());
    return 1;
  }
}
