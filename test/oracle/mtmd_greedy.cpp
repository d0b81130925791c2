// Test oracle: greedy generation through llama.cpp's and libmtmd's own public helpers
// (mtmd_tokenize + mtmd_helper_eval_chunks), printing the generated token ids on one line.
// llama-mtmd-cli does the same but logs asynchronously, so its stdout cannot be relied on.
//
// usage: minigpt-oracle --model M [--mmproj P --rgb FILE --width W --height H | --embd FILE]
//                       --prompt TEXT [--chat] [--system TEXT] [-n N] [--ctx N] [--threads N]
// --embd FILE: raw float32 rows of the model's input embedding width, put where the marker is
// by plain llama_decode (for projectors libmtmd does not know, such as our BLIP-2).
// With --chat the prompt is the user message, formatted by llama_chat_apply_template with the
// model's own template; without it the prompt is evaluated as written. The media marker
// <__media__> in the prompt stands for the image; the prompt may end with it.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

static void quiet(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char** argv) {
  std::string model_path, mmproj, rgb_path, embd_path, prompt, system;
  int width = 0, height = 0, n_predict = 32, n_ctx = 2048, threads = 2;
  bool chat = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--model") model_path = next();
    else if (a == "--mmproj") mmproj = next();
    else if (a == "--rgb") rgb_path = next();
    else if (a == "--embd") embd_path = next();
    else if (a == "--width") width = std::atoi(next().c_str());
    else if (a == "--height") height = std::atoi(next().c_str());
    else if (a == "--prompt") prompt = next();
    else if (a == "--system") system = next();
    else if (a == "--chat") chat = true;
    else if (a == "-n") n_predict = std::atoi(next().c_str());
    else if (a == "--ctx") n_ctx = std::atoi(next().c_str());
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else { fprintf(stderr, "unknown argument %s\n", a.c_str()); return 2; }
  }
  llama_log_set(quiet, nullptr);
  mtmd_log_set(quiet, nullptr);
  mtmd_helper_log_set(quiet, nullptr);
  llama_backend_init();

  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(model_path.c_str(), mp);
  if (!model) { fprintf(stderr, "cannot load model\n"); return 1; }
  const llama_vocab* vocab = llama_model_get_vocab(model);

  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = uint32_t(n_ctx);
  cp.n_batch = 512;
  cp.n_ubatch = 512;
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) { fprintf(stderr, "cannot create context\n"); return 1; }

  if (chat) {
    const char* tmpl = llama_model_chat_template(model, nullptr);
    std::vector<llama_chat_message> msgs;
    if (!system.empty()) msgs.push_back({"system", system.c_str()});
    msgs.push_back({"user", prompt.c_str()});
    std::vector<char> buf(prompt.size() * 2 + system.size() * 2 + 4096);
    int32_t n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), true, buf.data(), int32_t(buf.size()));
    if (n < 0) { fprintf(stderr, "chat template not recognised\n"); return 1; }
    prompt.assign(buf.data(), size_t(n));
  }

  llama_pos n_past = 0;
  if (!mmproj.empty()) {
    mtmd_context_params mparams = mtmd_context_params_default();
    mparams.use_gpu = false;
    mparams.n_threads = threads;
    mparams.print_timings = false;
    mparams.warmup = false;
    mtmd_context* mctx = mtmd_init_from_file(mmproj.c_str(), model, mparams);
    if (!mctx) { fprintf(stderr, "cannot load mmproj\n"); return 1; }
    std::ifstream f(rgb_path, std::ios::binary);
    std::vector<unsigned char> rgb((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (rgb.size() != size_t(width) * size_t(height) * 3) { fprintf(stderr, "rgb size mismatch\n"); return 1; }
    mtmd_bitmap* bmp = mtmd_bitmap_init(uint32_t(width), uint32_t(height), rgb.data());
    mtmd_input_chunks* chunks = mtmd_input_chunks_init();
    mtmd_input_text text{prompt.c_str(), prompt.size(), true, true};
    const mtmd_bitmap* bitmaps[] = {bmp};
    if (mtmd_tokenize(mctx, chunks, &text, bitmaps, 1) != 0) { fprintf(stderr, "mtmd_tokenize failed\n"); return 1; }
    if (std::getenv("ORACLE_VERBOSE")) {
      for (size_t i = 0; i < mtmd_input_chunks_size(chunks); ++i) {
        const mtmd_input_chunk* c = mtmd_input_chunks_get(chunks, i);
        size_t n = 0;
        const llama_token* t = mtmd_input_chunk_get_tokens_text(c, &n);
        fprintf(stderr, "chunk %zu type %d n_tokens %zu:", i, int(mtmd_input_chunk_get_type(c)), mtmd_input_chunk_get_n_tokens(c));
        for (size_t j = 0; t && j < n; ++j) fprintf(stderr, " %d", t[j]);
        fprintf(stderr, "\n");
        if (mtmd_input_chunk_get_type(c) == MTMD_INPUT_CHUNK_TYPE_IMAGE && mtmd_encode_chunk(mctx, c) == 0) {
          const float* e = mtmd_get_output_embd(mctx);
          fprintf(stderr, "embd %f %f %f %f\n", e[0], e[1], e[2], e[3]);
        }
      }
    }
    if (mtmd_helper_eval_chunks(mctx, ctx, chunks, 0, 0, 512, true, &n_past) != 0) { fprintf(stderr, "eval failed\n"); return 1; }
    // libmtmd's helpers never ask for logits from an image chunk (logits_last only reaches
    // text), so a prompt that ends with an image leaves none. Its last position is taken out of
    // the cache and decoded again alone, from the encoder's output, with logits: under a causal
    // mask that row sees what it saw before, so the cache ends as the helper left it.
    const size_t n_chunks = mtmd_input_chunks_size(chunks);
    const mtmd_input_chunk* last = n_chunks ? mtmd_input_chunks_get(chunks, n_chunks - 1) : nullptr;
    if (last && mtmd_input_chunk_get_type(last) == MTMD_INPUT_CHUNK_TYPE_IMAGE) {
      if (mtmd_decode_use_mrope(mctx)) { fprintf(stderr, "a prompt ending with an image is not supported under M-RoPE\n"); return 1; }
      const int32_t n_img = int32_t(mtmd_input_chunk_get_n_tokens(last));
      const int32_t n_embd = llama_model_n_embd_inp(model);
      const float* embd = mtmd_get_output_embd(mctx);  // still the last chunk's: nothing was encoded since
      const llama_pos p = n_past - 1;
      if (!llama_memory_seq_rm(llama_get_memory(ctx), 0, p, -1)) { fprintf(stderr, "seq_rm failed\n"); return 1; }
      llama_batch b = llama_batch_init(1, n_embd, 1);
      std::memcpy(b.embd, embd + size_t(n_img - 1) * size_t(n_embd), size_t(n_embd) * sizeof(float));
      b.pos[0] = p;
      b.n_seq_id[0] = 1;
      b.seq_id[0][0] = 0;
      b.logits[0] = 1;
      b.n_tokens = 1;
      const int32_t rc = llama_decode(ctx, b);
      llama_batch_free(b);
      if (rc != 0) { fprintf(stderr, "decode of the last image row failed\n"); return 1; }
    }
    mtmd_input_chunks_free(chunks);
    mtmd_bitmap_free(bmp);
    mtmd_free(mctx);
  } else if (!embd_path.empty()) {
    // Embeddings made elsewhere (our BLIP-2 projector) in place of the marker. Every batch goes
    // in with neither positions nor output flags, so llama.cpp places it after what the
    // sequence holds and keeps the logits of its last row, whatever that row is.
    const std::string marker = mtmd_default_marker();
    const size_t at = prompt.find(marker);
    if (at == std::string::npos) { fprintf(stderr, "--embd needs the marker in the prompt\n"); return 1; }
    const int32_t n_embd = llama_model_n_embd_inp(model);
    std::ifstream f(embd_path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t row = size_t(n_embd) * sizeof(float);
    if (bytes.empty() || bytes.size() % row != 0) { fprintf(stderr, "embedding file size is not a multiple of a row\n"); return 1; }
    std::vector<float> embd(bytes.size() / sizeof(float));
    std::memcpy(embd.data(), bytes.data(), bytes.size());
    const int32_t n_rows = int32_t(bytes.size() / row);
    auto decode_text = [&](const std::string& text, bool bos) -> int32_t {
      std::vector<llama_token> toks(text.size() + 8);
      int32_t n = llama_tokenize(vocab, text.c_str(), int32_t(text.size()), toks.data(), int32_t(toks.size()), bos, true);
      if (n < 0) return -1;
      if (n > 0 && llama_decode(ctx, llama_batch_get_one(toks.data(), n)) != 0) return -1;
      return n;
    };
    const int32_t n_before = decode_text(prompt.substr(0, at), true);
    if (n_before < 0) { fprintf(stderr, "text before the marker failed\n"); return 1; }
    llama_batch b{n_rows, nullptr, embd.data(), nullptr, nullptr, nullptr, nullptr};
    if (llama_decode(ctx, b) != 0) { fprintf(stderr, "decode of the embeddings failed\n"); return 1; }
    const int32_t n_after = decode_text(prompt.substr(at + marker.size()), false);
    if (n_after < 0) { fprintf(stderr, "text after the marker failed\n"); return 1; }
    n_past = n_before + n_rows + n_after;
  } else {
    std::vector<llama_token> toks(prompt.size() + 8);
    int32_t n = llama_tokenize(vocab, prompt.c_str(), int32_t(prompt.size()), toks.data(), int32_t(toks.size()), true, true);
    if (n < 0) { fprintf(stderr, "tokenize failed\n"); return 1; }
    toks.resize(size_t(n));
    if (llama_decode(ctx, llama_batch_get_one(toks.data(), n)) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
    n_past = n;
  }

  llama_sampler* greedy = llama_sampler_init_greedy();
  for (int i = 0; i < n_predict; ++i) {
    llama_token t = llama_sampler_sample(greedy, ctx, -1);
    if (llama_vocab_is_eog(vocab, t)) break;
    printf("%s%d", i ? " " : "", t);
    if (llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
    ++n_past;
  }
  printf("\n");
  llama_sampler_free(greedy);
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}
