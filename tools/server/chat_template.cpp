#include "chat_template.h"

#include "formats/gguf.h"
#include "formats/hf_config.h"
#include "model/model.h"
#include "runtime/error.h"

namespace lcx::server {

namespace {

using Kind = Part::Kind;

std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

Part text_part(std::string text, Kind kind, int msg, bool separate = false) {
  Part p;
  p.kind = kind;
  p.msg = msg;
  p.text = std::move(text);
  p.separate = separate;
  return p;
}

Part id_part(int32_t id, Kind kind, int msg) {
  Part p;
  p.kind = kind;
  p.msg = msg;
  p.id = id;
  return p;
}

// LongLLaMA-Instruct-3Bv1.1 chat tuning (long_llama instruction_fine_tuning/
// example_instchat_ft_3bv1.1_low_budget.sh, data_processing.py chat_tuning_data_processor):
// BOS, the initial prompt, then per turn a "\nUSER: " / "\nASSISTANT: " prefix and the text,
// each tokenized separately without special tokens; EOS after each assistant turn.
const char* kLongLlamaInitialPrompt =
    "A chat between a user (denoted as USER:) and an artificial intelligence assistant (denoted as "
    "ASSISTANT:). The assistant gives helpful, detailed, and polite answers to the user's questions.\n\n";

}  // namespace

std::vector<std::string> ChatTemplate::names() { return {"llama2", "llama3", "chatml", "zephyr", "longllama"}; }

ChatTemplate::ChatTemplate(const std::string& name, const longctx::Model& model) : name_(name), model_(model) {
  bool known = false;
  for (const auto& n : names()) known |= n == name;
  if (!known)
    fail("unknown chat template '" + name + "': use one of llama2, llama3, chatml, zephyr, longllama");
  model_.impl().tok();  // templates need a tokenizer: fail now with its explanation
  auto end_marker = [&](const std::string& piece) {
    const int32_t id = special_id(piece);
    if (id >= 0) stop_ids_.push_back(id);
    else stop_strings_.push_back(piece);
  };
  if (name_ == "chatml") end_marker("<|im_end|>");
  if (name_ == "llama3") end_marker("<|eot_id|>");
  if (name_ == "zephyr") stop_strings_.push_back("<|user|>");  // EOS ends the turn; a new turn too
  // The base vocabulary has no end-of-turn marker besides EOS; a user turn starting means
  // the reply is over.
  if (name_ == "longllama") stop_strings_.push_back("\nUSER:");
  if (name_ == "llama2") stop_strings_.push_back("[INST]");
}

int32_t ChatTemplate::special_id(const std::string& piece) const {
  const SpmVocab& v = model_.impl().tok().vocab();
  for (size_t i = 0; i < v.pieces.size(); ++i)
    if (v.pieces[i] == piece && (v.types[i] == TokenType::Control || v.types[i] == TokenType::UserDefined))
      return int32_t(i);
  return -1;
}

// A marker is its special token when the vocabulary has one, else plain text.
Part ChatTemplate::marker(const std::string& piece, Kind kind, int msg) const {
  const int32_t id = special_id(piece);
  return id >= 0 ? id_part(id, kind, msg) : text_part(piece, kind, msg);
}

std::string ChatTemplate::detect_from_jinja(const std::string& j) {
  if (j.find("<|im_start|>") != std::string::npos) return "chatml";
  if (j.find("<|start_header_id|>") != std::string::npos) return "llama3";
  if (j.find("<|user|>") != std::string::npos && j.find("<|assistant|>") != std::string::npos) return "zephyr";
  if (j.find("[INST]") != std::string::npos) return "llama2";
  if (j.find("USER:") != std::string::npos && j.find("ASSISTANT:") != std::string::npos) return "longllama";
  return "";
}

std::string ChatTemplate::detect(const longctx::Model& model, std::string* what) {
  const lcx::Model& m = model.impl();
  std::string jinja, where;
  try {
    if (m.format == "gguf") {
      const GgufFile f = GgufFile::open(m.path);
      jinja = f.get_str("tokenizer.chat_template", "");
      where = "GGUF metadata tokenizer.chat_template";
    } else {
      const HfChatTemplate t = read_hf_chat_template(m.path);
      jinja = t.text;
      where = t.where;
      if (!t.problem.empty()) {
        if (what) *what = t.problem;
        return "";
      }
    }
  } catch (const std::exception&) {
    jinja.clear();
  }
  const std::string name = jinja.empty() ? "" : detect_from_jinja(jinja);
  if (what) {
    if (jinja.empty()) *what = "no chat_template in " + where;
    else if (name.empty()) *what = "an unrecognised chat_template in " + where;
    else *what = "chat_template in " + where + " (" + name + ")";
  }
  return name;
}

std::vector<Part> ChatTemplate::render(const std::vector<ChatMessage>& msgs, bool add_generation_prompt) const {
  for (const auto& m : msgs)
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      fail("message role '" + m.role + "' is not supported: use system, user or assistant");
  const int32_t bos = model_.impl().tok().bos_id(), eos = model_.impl().tok().eos_id();
  std::vector<Part> out;
  const int n = int(msgs.size());

  if (name_ == "chatml" || name_ == "llama3") {
    const bool l3 = name_ == "llama3";
    // Llama 3's <|begin_of_text|> is its BOS; ChatML models get BOS when their tokenizer adds it.
    if (l3 || model_.impl().tok().vocab().add_bos) out.push_back(id_part(bos, Kind::Prefix, -1));
    auto open = [&](const std::string& role, Kind kind, int i) {
      if (l3) {
        out.push_back(marker("<|start_header_id|>", kind, i));
        out.push_back(text_part(role, kind, i));
        out.push_back(marker("<|end_header_id|>", kind, i));
        out.push_back(text_part("\n\n", kind, i));
      } else {
        out.push_back(marker("<|im_start|>", kind, i));
        out.push_back(text_part(role + "\n", kind, i));
      }
    };
    for (int i = 0; i < n; ++i) {
      open(msgs[size_t(i)].role, Kind::Open, i);
      out.push_back(text_part(l3 ? trim(msgs[size_t(i)].content) : msgs[size_t(i)].content, Kind::Content, i));
      out.push_back(marker(l3 ? "<|eot_id|>" : "<|im_end|>", Kind::CloseMarker, i));
      if (!l3) out.push_back(text_part("\n", Kind::CloseTail, i));
    }
    if (add_generation_prompt) open("assistant", Kind::GenPrompt, -1);
    return out;
  }

  if (name_ == "zephyr") {
    // Zephyr / TinyLlama-Chat: "<|role|>\n" + content + eos_token + "\n" per message (the Jinja's
    // eos_token text is the EOS id), then "<|assistant|>\n". BOS as the tokenizer adds it.
    if (model_.impl().tok().vocab().add_bos) out.push_back(id_part(bos, Kind::Prefix, -1));
    for (int i = 0; i < n; ++i) {
      out.push_back(text_part("<|" + msgs[size_t(i)].role + "|>\n", Kind::Open, i));
      out.push_back(text_part(msgs[size_t(i)].content, Kind::Content, i));
      out.push_back(id_part(eos, Kind::CloseMarker, i));
      out.push_back(text_part("\n", Kind::CloseTail, i));
    }
    if (add_generation_prompt) out.push_back(text_part("<|assistant|>\n", Kind::GenPrompt, -1));
    return out;
  }

  if (name_ == "llama2") {
    // Meta's template: the system prompt goes inside the first [INST] block.
    int i = 0;
    std::string system;
    if (n > 0 && msgs[0].role == "system") {
      system = msgs[0].content;
      i = 1;
    }
    bool first_user = true;
    for (; i < n; ++i) {
      const ChatMessage& m = msgs[size_t(i)];
      if (m.role == "assistant") {
        out.push_back(text_part(" " + trim(m.content) + " ", Kind::Content, i));
        out.push_back(id_part(eos, Kind::CloseMarker, i));
        continue;
      }
      std::string content = m.content;
      if (first_user && !system.empty()) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
      first_user = false;
      out.push_back(id_part(bos, Kind::Open, i));
      out.push_back(text_part("[INST] " + trim(content) + " [/INST]", Kind::Content, i));
    }
    // " [/INST]" closing the last user turn is where the reply starts: no separate prompt.
    return out;
  }

  // longllama
  out.push_back(id_part(bos, Kind::Prefix, -1));
  int i = 0;
  std::string initial = kLongLlamaInitialPrompt;
  if (n > 0 && msgs[0].role == "system") {
    initial = msgs[0].content + "\n\n";
    i = 1;
  }
  out.push_back(text_part(initial, Kind::Prefix, -1, true));
  for (; i < n; ++i) {
    const ChatMessage& m = msgs[size_t(i)];
    const bool model_turn = m.role == "assistant";
    out.push_back(text_part(model_turn ? "\nASSISTANT: " : "\nUSER: ", Kind::Open, i, true));
    out.push_back(text_part(m.content, Kind::Content, i, true));
    if (model_turn) out.push_back(id_part(eos, Kind::CloseMarker, i));
  }
  if (add_generation_prompt) out.push_back(text_part("\nASSISTANT: ", Kind::GenPrompt, -1, true));
  return out;
}

std::vector<int32_t> ChatTemplate::tokenize(const std::vector<Part>& parts) const {
  std::vector<int32_t> ids;
  std::string pending;
  auto flush = [&] {
    if (pending.empty()) return;
    const auto t = model_.tokenize(pending, /*add_bos=*/false);
    ids.insert(ids.end(), t.begin(), t.end());
    pending.clear();
  };
  for (const auto& p : parts) {
    if (p.id >= 0) {
      flush();
      ids.push_back(p.id);
    } else if (p.separate) {
      flush();
      pending = p.text;
      flush();
    } else {
      pending += p.text;
    }
  }
  flush();
  return ids;
}

}  // namespace lcx::server
