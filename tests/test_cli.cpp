// The CLI as a user meets it: help for every subcommand, clear errors and non-zero exits for
// bad input, and the main commands working end to end. Also runs under ASan/UBSan in CI.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "testutil.h"

namespace fs = std::filesystem;
using namespace lcx::test;

namespace {

std::string cli() { return bin_dir() + "/longctx"; }
std::string model() { return (fs::path(fixtures_dir()) / "models" / "llama_mha").string(); }
std::string tok() { return (fs::path(fixtures_dir()) / "tokenizer.model").string(); }

int run(const std::string& args, std::string* out = nullptr) { return run_cmd(cli() + " " + args + " 2>&1", out); }

TEST(Cli, HelpForEveryCommand) {
  std::string out;
  EXPECT_EQ(run("--help", &out), 0);
  EXPECT_NE(out.find("commands:"), std::string::npos);
  for (const char* c : {"run", "info", "tokenize", "logits", "generate-ids", "convert", "rope", "ingest"}) {
    EXPECT_EQ(run(std::string(c) + " --help", &out), 0) << c;
    EXPECT_NE(out.find("usage: longctx"), std::string::npos) << c << ": " << out;
  }
  EXPECT_NE(run("", &out), 0);
  EXPECT_NE(run("frobnicate", &out), 0);
  EXPECT_NE(out.find("unknown command"), std::string::npos);
}

TEST(Cli, ErrorsAreClear) {
  struct Bad {
    std::string args, expect;
  };
  const std::vector<Bad> cases = {
      {"info -m /no/such/model", "does not exist"},
      {"info", "needs --model"},
      {"info -m " + model() + " --bogus 1", "unknown option '--bogus'"},
      {"logits -m " + model() + " --ids 1,x,3 --out /tmp/x.f32", "not a token id"},
      {"logits -m " + model() + " --ids 1,99999999 --out /tmp/x.f32", "outside the vocabulary"},
      {"logits -m " + model() + " --ids 1,2", "needs --out"},
      {"run -m " + model() + " -p hi", "no tokenizer"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p 'hello there' -c 2", "exceeds the context size"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi --temp -1", "--temp"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi -n abc", "expects an integer"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi --temp nan", "--temp"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi --repeat-penalty inf", "--repeat-penalty"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi -t 100000", "--threads 100000 is out of range"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi --rope-scaling yarn --rope-scale 4 --yarn-attn-factor 1e30",
       "attention_factor"},
      {"run -m " + model() + " --tokenizer /no/tok.model -p hi", "tokenizer"},
      {"info -m " + model() + " --rope-scaling warp", "unknown method"},
      {"info -m " + model() + " --mem-dtype float8", "--mem-dtype"},
      {"run -m " + model() + " -p hi -n 1 -ctk f16 -ctv f32", "one cache type"},
      {"run -m " + model() + " -p hi -n 1 --cache-type f8", "--cache-type"},
      {"convert -m " + model() + " --tokenizer " + tok() + " --outtype q3_k_m -o /tmp/x.gguf", "unknown dtype"},
      {"run -m " + model() + " --tokenizer " + tok() + " --memory /no/such.mem -p hi", "cannot open"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi --lookup 99", "--lookup must be in 0..15"},
      // Integers that would wrap in the type they go to, and values a later flag repeats.
      {"generate-ids -m " + model() + " --ids 1 -n 4294967297", "--n-predict must be in 0..2147483647"},
      {"generate-ids -m " + model() + " --ids 1 -n -2", "--n-predict must be in"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi -n 1 --temp 0 --temp -5", "--temp"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi -n 1 -m /no/such/model", "does not exist"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi --top-k -3", "--top-k must be in"},
      {"run -m " + model() + " --tokenizer " + tok() + " -p hi --hnsw-m 2147483647", "--hnsw-m must be in 2..10000"},
      {"logits -m " + model() + " --ids 1,,3 --out /tmp/x.f32", "empty item"},
      // Caches that cannot fit are refused before any work (1 TiB of f32 KV cache here).
      {"bench -m " + model() + " -p 8 -n 0 -d 999999999", "GiB of caches"},
      {"logits -m " + model() + " --ids 1,2 --feed 3 --out /tmp/x.f32", "--feed must be in 1..2"},
      {"run -m " + model() + " --tokenizer " + tok() + " -f /tmp -n 1", "is a directory"},
  };
  for (const auto& c : cases) {
    std::string out;
    EXPECT_NE(run(c.args, &out), 0) << c.args;
    EXPECT_NE(out.find("error:"), std::string::npos) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.expect), std::string::npos) << c.args << "\n" << out;
  }
}

TEST(Cli, TokenizeRunInfo) {
  std::string out;
  ASSERT_EQ(run("tokenize -m " + model() + " --tokenizer " + tok() + " -p 'The quick brown fox'", &out), 0) << out;
  EXPECT_EQ(out.substr(0, 3), "[1,");
  ASSERT_EQ(run("run -m " + model() + " --tokenizer " + tok() + " -p 'The quick brown fox' -n 8 --temp 0", &out), 0) << out;
  EXPECT_NE(out.find("generated 8 tokens"), std::string::npos) << out;
  // Lookup decoding: the same text; the stats line says how many drafts were accepted.
  std::string plain, fast;
  const std::string loop = " run -m " + (fs::path(fixtures_dir()) / "models" / "llama_gqa").string() + " --tokenizer " +
                           tok() + " -p 'The cat sat on the mat. The cat sat' -n 40 --temp 0";
  ASSERT_EQ(run_cmd(cli() + loop + " 2>/dev/null", &plain), 0) << plain;
  ASSERT_EQ(run_cmd(cli() + loop + " --lookup 3 2>/dev/null", &fast), 0) << fast;
  EXPECT_EQ(plain, fast);
  ASSERT_EQ(run(loop.substr(1) + " --lookup 3", &out), 0) << out;
  EXPECT_NE(out.find("drafts accepted"), std::string::npos) << out;
  // JSON mode: stdout is (a prefix of) one JSON object.
  ASSERT_EQ(run_cmd(cli() + " run -m " + model() + " --tokenizer " + tok() + " -p 'JSON:' -n 12 --temp 0 --json-object 2>/dev/null",
                    &out), 0) << out;
  EXPECT_EQ(out.find_first_not_of(" \n\r\t"), out.find('{')) << out;
  ASSERT_EQ(run("info -m " + model(), &out), 0);
  EXPECT_NE(out.find("architecture: llama"), std::string::npos);
  EXPECT_NE(out.find("MiB memory-mapped"), std::string::npos) << out;  // small: auto maps it
  ASSERT_EQ(run("info -m " + model() + " --no-mmap", &out), 0);
  EXPECT_NE(out.find("MiB in 2 MiB huge pages"), std::string::npos) << out;
  ASSERT_EQ(run("info -m " + model() + " --mmap", &out), 0);
  EXPECT_NE(out.find("MiB memory-mapped"), std::string::npos) << out;
  ASSERT_EQ(run("info -m " + (fs::path(fixtures_dir()) / "models" / "longllama_mem").string(), &out), 0);
  EXPECT_NE(out.find("fot memory"), std::string::npos);
  ASSERT_EQ(run("rope -m " + (fs::path(fixtures_dir()) / "models" / "llama_rope_yarn").string(), &out), 0) << out;
}

TEST(Cli, IngestThenAsk) {
  const std::string m = (fs::path(fixtures_dir()) / "models" / "longllama_mem").string();
  const fs::path doc = fs::path(tmp_dir()) / "doc.txt";
  {
    std::string text;
    for (int i = 0; i < 40; ++i) text += "The grass is green. The sky is blue. The sun is yellow. Here we go. ";
    std::ofstream(doc) << text << "The pass key is 4242. Remember it.";
  }
  const std::string mem = (fs::path(tmp_dir()) / "doc.mem").string();
  std::string out;
  ASSERT_EQ(run("ingest -m " + m + " --tokenizer " + tok() + " -f " + doc.string() + " --save " + mem, &out), 0) << out;
  EXPECT_NE(out.find("memory:"), std::string::npos);
  ASSERT_EQ(run("run -m " + m + " --tokenizer " + tok() + " --memory " + mem + " -p 'What is the pass key?' -n 4 --temp 0", &out), 0) << out;
  // Same model, other settings: refused with a clear message.
  EXPECT_NE(run("run -m " + m + " --tokenizer " + tok() + " --mem-dtype bfloat16 --memory " + mem + " -p x -n 1", &out), 0);
  EXPECT_NE(out.find("other settings"), std::string::npos) << out;
}

// Outputs never destroy inputs: a path that is one of the command's inputs is refused; a
// symbolic link is written through (the link stays); a device is written in place (not replaced
// by a regular file); an empty document is an error like an empty -p.
TEST(Cli, OutputsNeverDestroyInputs) {
  const fs::path d = fs::path(tmp_dir()) / "cli_outputs";
  fs::remove_all(d);
  fs::create_directories(d / "m");
  for (const auto& e : fs::directory_iterator(model())) fs::copy_file(e.path(), d / "m" / e.path().filename());
  fs::copy_file(tok(), d / "m" / "tokenizer.model");
  const std::string m = (d / "m").string(), st = (d / "m" / "model.safetensors").string();
  const auto size_before = fs::file_size(st);
  std::string out;
  EXPECT_NE(run("convert -m " + m + " --outtype q8_0 -o " + st, &out), 0);
  EXPECT_NE(out.find("would destroy an input"), std::string::npos) << out;
  EXPECT_NE(run("logits -m " + m + " --ids 1,2 --out " + (d / "m" / "tokenizer.model").string(), &out), 0);
  EXPECT_EQ(fs::file_size(st), size_before);
  std::ofstream(d / "ids.txt") << "1,2,3\n";
  EXPECT_NE(run("logits -m " + m + " --ids-file " + (d / "ids.txt").string() + " --out " + (d / "ids.txt").string(), &out), 0);
  EXPECT_NE(out.find("--ids-file"), std::string::npos) << out;
  std::ofstream(d / "doc.txt") << "some text to read\n";
  EXPECT_NE(run("ingest -m " + m + " -f " + (d / "doc.txt").string() + " --save " + (d / "doc.txt").string(), &out), 0);
  EXPECT_EQ(lcx::test::read_file((d / "doc.txt").string()), "some text to read\n");
  // Through a symbolic link: the file it names is written, the link stays a link.
  fs::create_symlink("target.f32", d / "link.f32");
  ASSERT_EQ(run("logits -m " + m + " --ids 1,2 --out " + (d / "link.f32").string(), &out), 0) << out;
  EXPECT_TRUE(fs::is_symlink(d / "link.f32"));
  EXPECT_EQ(fs::file_size(d / "target.f32"), size_t(2 * 32000 * 4));
  // A device is written in place.
  ASSERT_EQ(run("logits -m " + m + " --ids 1,2 --out /dev/null", &out), 0) << out;
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
  std::ofstream(d / "empty.txt").close();
  EXPECT_NE(run("run -m " + m + " -f " + (d / "empty.txt").string() + " -n 1", &out), 0);
  EXPECT_NE(out.find("is empty"), std::string::npos) << out;
}

// Output that cannot be written is an error, not a silent success.
TEST(Cli, StdoutWriteErrorIsAnError) {
  std::string out;
  EXPECT_NE(run_cmd(cli() + " info -m " + model() + " --tokenizer " + tok() + " 2>&1 >/dev/full", &out), 0);
  EXPECT_NE(out.find("writing to standard output failed"), std::string::npos) << out;
}

// A tokenizer_config.json that is there but broken is named as broken, not as "no template".
TEST(Cli, BrokenTokenizerConfigIsNamed) {
  const fs::path d = fs::path(tmp_dir()) / "cli_tokcfg";
  fs::remove_all(d);
  fs::create_directories(d);
  for (const auto& e : fs::directory_iterator(model())) fs::copy_file(e.path(), d / e.path().filename());
  fs::copy_file(tok(), d / "tokenizer.model");
  std::string out;
  std::ofstream(d / "tokenizer_config.json") << "{bad";
  EXPECT_NE(run("chat -m " + d.string() + " < /dev/null", &out), 0);
  EXPECT_NE(out.find("is not valid JSON"), std::string::npos) << out;
  std::ofstream(d / "tokenizer_config.json") << R"({"chat_template": 5})";
  EXPECT_NE(run("chat -m " + d.string() + " < /dev/null", &out), 0);
  EXPECT_NE(out.find("not a string"), std::string::npos) << out;
}

// The last of a repeated flag wins, as in llama.cpp.
TEST(Cli, LastRepeatedFlagWins) {
  std::string out;
  ASSERT_EQ(run_cmd(cli() + " generate-ids -m " + model() + " --ids 1,2 -n 7 -n 3 2>/dev/null", &out), 0) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), ','), 2) << out;
}

}  // namespace
