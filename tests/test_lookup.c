/* test_lookup.c: discovery and typed binding (runtime/lookup.c) under the sanitizers: what rf_list
 * says a rank binds equals what the engine's own rf_src_bytes wants, for every rank and tensor of
 * the small plans; sources have the shapes the trainer's modules hold (fused experts 3-D) in every
 * plan; destinations are found by their aliases, with the tables' strides and padding; derived views
 * are checked against the table's strides and storage offset and bind their storage once; rf_bind's
 * refusals carry the tensor, expected and got; an accepted rf_bind is the engine's rf_bind_src. The
 * Python tests cover every message through the module. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plans.h"
#include "refit.h"

#include "expect.h"

static const char *const small[] = {"dsv3_tiny_mtp", "glm_tiny_demo", "glm_tiny_rep2", "qwen3_moe_tiny_bf16",
                                    "qwen3_moe_tiny_ep2", "qwen3_moe_tiny_per_expert", "qwen3_tiny_fp8_tp4",
                                    "qwen3_tiny_tp2", "vllm_dsv3_fp8_tp2", "vllm_qwen3moe_bf16_tp2"};

static void test_lists_match_engine(void)
{
  for (size_t k = 0; k < sizeof small / sizeof small[0]; k++) {
    const rf_plan *p = rf_plan_find(small[k]);
    EXPECT(p, "no plan %s", small[k]);
    if (!p) continue;
    for (uint32_t r = 0; r < p->trainers; r++) {
      rf_config cfg = {.plan = p, .role = RF_TRAINER, .rank = r, .token = 1, .ucx_tls = "tcp"};
      rf_engine *e = NULL;
      rf_status s = rf_open(&cfg, &e);
      EXPECT(s == RF_OK, "%s rank %u: rf_open: %s", p->name, r, rf_last_error(e));
      if (s != RF_OK) {
        rf_close(e);
        continue;
      }
      uint32_t n = 0, got = 0;
      EXPECT(rf_list(p, RF_SIDE_SRC, r, NULL, 0, &n) == RF_OK, "rf_list count");
      rf_tensor_info *v = calloc(n ? n : 1, sizeof *v);
      EXPECT(rf_list(p, RF_SIDE_SRC, r, v, n, &got) == RF_OK && got == n, "rf_list");
      uint32_t j = 0;
      for (uint32_t i = 0; i < p->n_src; i++) {
        uint64_t want = rf_src_bytes(e, i), listed = j < n && v[j].id == i ? v[j++].bytes : 0;
        rf_tensor_info one;
        EXPECT(rf_describe(p, RF_SIDE_SRC, r, i, &one) == RF_OK && one.bytes == want,
               "%s rank %u '%s': rf_describe %llu bytes, the engine wants %llu", p->name, r, p->src[i].name,
               (unsigned long long)one.bytes, (unsigned long long)want);
        EXPECT(listed == want, "%s rank %u '%s': rf_list %llu bytes, the engine wants %llu", p->name, r,
               p->src[i].name, (unsigned long long)listed, (unsigned long long)want);
        EXPECT(rf_find(p, RF_SIDE_SRC, r, p->src[i].name) <= i, "rf_find '%s'", p->src[i].name);
      }
      EXPECT(j == n, "%s rank %u: %u listed, %u matched", p->name, r, n, j);
      free(v);
      rf_close(e);
    }
    for (uint32_t r = 0; r < p->receivers; r++) {
      uint32_t n = 0;
      EXPECT(rf_list(p, RF_SIDE_DST, r, NULL, 0, &n) == RF_OK && n == p->recv[r].dst_count, "dst list of %u", r);
      const rf_dst_tensor *d = &p->dst[p->recv[r].dst_first];
      EXPECT(rf_find(p, RF_SIDE_DST, r, d->name) == p->recv[r].dst_first, "rf_find dst '%s'", d->name);
    }
  }
  EXPECT(rf_find(rf_plan_find("qwen3_tiny_tp2"), RF_SIDE_SRC, 0, "nope") == RF_NONE, "unknown name");
  /* a Megatron plan names decoder.layers.0.self_attention.linear_qkv.weight on both TP ranks: each
   * rank finds its own shard */
  const rf_plan *mp = rf_plan_find("megatron_qwen3_tiny_tp2");
  EXPECT(mp != NULL, "megatron_qwen3_tiny_tp2 in the plan set");
  uint32_t own = 0;
  for (uint32_t i = 0; mp && i < mp->n_src; i++) {
    uint32_t r = mp->src[i].shard;
    EXPECT(rf_find(mp, RF_SIDE_SRC, r, mp->src[i].name) == i, "rank %u finds its own '%s' (src %u), got %u", r,
           mp->src[i].name, i, rf_find(mp, RF_SIDE_SRC, r, mp->src[i].name));
    own += r == 1 && strcmp(mp->src[i].name, "decoder.layers.0.self_attention.linear_qkv.weight") == 0;
  }
  EXPECT(own == 1, "rank 1 sends its own linear_qkv shard (%u)", own);
  EXPECT(rf_plan_find("nope") == NULL && rf_plan_at(rf_plan_count()) == NULL, "plan set bounds");
  EXPECT(rf_abi_version() == RF_ABI_VERSION, "ABI");
}

static void test_bind(void)
{
  const rf_plan *p = rf_plan_find("qwen3_tiny_tp2");
  rf_config cfg = {.plan = p, .role = RF_TRAINER, .rank = 1, .token = 1, .ucx_tls = "tcp"};
  rf_engine *e = NULL;
  if (rf_open(&cfg, &e) != RF_OK) {
    EXPECT(0, "rf_open: %s", rf_last_error(e));
    rf_close(e);
    return;
  }
  EXPECT(rf_engine_config(e)->rank == 1 && rf_engine_config(e)->plan == p && rf_engine_config(NULL) == NULL, "config");
  uint32_t id = rf_find(p, RF_SIDE_SRC, 1, "model.layers.0.self_attn.o_proj.weight");
  static uint16_t buf[256 * 512];
  int64_t shape[2] = {128, 512}, tshape[2] = {512, 128}, tstrides[2] = {1, 128};
  rf_tensor t = {.data = buf, .device_type = 1, .dtype_code = 4, .dtype_bits = 16, .dtype_lanes = 1, .ndim = 2,
                 .shape = shape, .row0 = -1};
  char err[512];
  const char *at = "tensor 'model.layers.0.self_attn.o_proj.weight' (source 4, trainer rank 1)";
  char want[600];
  rf_tensor bad = t;
  bad.dtype_code = 2, bad.dtype_bits = 32;
  snprintf(want, sizeof want, "%s: dtype float32, expected bfloat16 (the plan's source dtype)", at);
  EXPECT(rf_bind(e, RF_SIDE_SRC, id, &bad, err, sizeof err) == RF_ERR_TYPE && strcmp(err, want) == 0, "got '%s'", err);
  bad = t, bad.shape = tshape;
  snprintf(want, sizeof want, "%s: shape [512, 128], expected [128, 512] (rows 128..255 of [256, 512], FSDP shard 1 of 2): "
           "transposed", at);
  EXPECT(rf_bind(e, RF_SIDE_SRC, id, &bad, err, sizeof err) == RF_ERR_TYPE && strcmp(err, want) == 0, "got '%s'", err);
  bad = t, bad.strides = tstrides;
  snprintf(want, sizeof want, "%s: strides [1, 128] (elements), expected [512, 1]: a transposed view; bind a row-major copy", at);
  EXPECT(rf_bind(e, RF_SIDE_SRC, id, &bad, err, sizeof err) == RF_ERR_TYPE && strcmp(err, want) == 0, "got '%s'", err);
  bad = t, bad.row0 = 0;
  snprintf(want, sizeof want, "%s: holds rows 0..127 of [256, 512], this rank binds rows 128..255 (FSDP shard 1 of 2): "
           "the wrong shard", at);
  EXPECT(rf_bind(e, RF_SIDE_SRC, id, &bad, err, sizeof err) == RF_ERR_TYPE && strcmp(err, want) == 0, "got '%s'", err);
  bad = t, bad.device_type = 2;
  snprintf(want, sizeof want, "%s: on cuda:0, the engine binds host memory (mem = RF_MEM_HOST)", at);
  EXPECT(rf_bind(e, RF_SIDE_SRC, id, &bad, err, sizeof err) == RF_ERR_TYPE && strcmp(err, want) == 0, "got '%s'", err);
  EXPECT(rf_bind(e, RF_SIDE_DST, 0, &t, err, sizeof err) == RF_ERR_ARG &&
         strcmp(err, "dst tensors are bound by receivers, this engine is a trainer") == 0, "got '%s'", err);
  EXPECT(rf_bind(e, RF_SIDE_SRC, p->n_src, &t, err, sizeof err) == RF_ERR_ARG &&
         strcmp(err, "source 24 out of range (24 in plan 'qwen3_tiny_tp2')") == 0, "got '%s'", err);
  EXPECT(rf_bind(e, RF_SIDE_SRC, id, &t, err, sizeof err) == RF_OK, "a good tensor: %s", err);
  t.row0 = 128;
  EXPECT(rf_bind(e, RF_SIDE_SRC, id, &t, NULL, 0) == RF_OK, "with its offset, no error buffer");
  rf_close(e);
}

/* every plan: a source's shape is its table shape, its 2-D view rows x cols, its strides row-major over
 * what the rank binds; destinations carry the table's strides, aliases and padding */
static void test_shapes(void)
{
  int fused = 0;
  for (uint32_t k = 0; k < rf_plan_count(); k++) {
    const rf_plan *p = rf_plan_at(k);
    for (uint32_t i = 0; i < p->n_src; i++) {
      const rf_src_tensor *s = &p->src[i];
      rf_tensor_info t;
      EXPECT(rf_describe(p, RF_SIDE_SRC, 0, i, &t) == RF_OK, "describe");
      int64_t rows = 1;
      for (int d = 0; d < t.ndim - 1; d++) rows *= t.shape[d];
      int ok = t.ndim == s->ndim && memcmp(t.shape, s->shape, sizeof t.shape) == 0 &&
               (t.ndim == 1 ? rows == 1 && t.shape[0] == s->rows : rows == s->rows && t.shape[t.ndim - 1] == s->cols);
      ok &= t.stride[t.ndim - 1] == 1 && (t.ndim < 2 || t.stride[t.ndim - 2] == t.shape[t.ndim - 1]);
      EXPECT(ok, "%s '%s': ndim %d shape [%lld, %lld, %lld] stride [%lld, ...] against rows %lld cols %lld", p->name, s->name,
             t.ndim, (long long)t.shape[0], (long long)t.shape[1], (long long)t.shape[2], (long long)t.stride[0],
             (long long)s->rows, (long long)s->cols);
      fused += t.ndim == 3;
    }
    for (uint32_t r = 0; r < p->receivers; r++) {
      const rf_receiver *rv = &p->recv[r];
      for (uint32_t i = rv->dst_first; i < rv->dst_first + rv->dst_count; i++) {
        rf_tensor_info t;
        EXPECT(rf_describe(p, RF_SIDE_DST, r, i, &t) == RF_OK && memcmp(t.stride, p->dst[i].stride, sizeof t.stride) == 0 &&
               t.pad_rows == p->dst[i].pad_rows && strcmp(t.aliases, p->dst[i].aliases) == 0, "%s dst '%s'", p->name,
               p->dst[i].name);
      }
    }
  }
  EXPECT(fused > 0, "no fused experts in any plan");
  /* GLM tiny, receiver 1: an alias finds its tensor; lm_head has three names */
  const rf_plan *g = rf_plan_find("glm_tiny_demo");
  uint32_t gate = rf_find(g, RF_SIDE_DST, 1, "model.layers.1.mlp.gate.weight");
  EXPECT(gate != RF_NONE && rf_find(g, RF_SIDE_DST, 1, "model.layers.1.mlp.experts.gate.weight") == gate, "alias");
  EXPECT(rf_find(g, RF_SIDE_DST, 1, "drafter.lm_head.weight") == rf_find(g, RF_SIDE_DST, 1, "lm_head.weight") &&
         rf_find(g, RF_SIDE_DST, 1, "drafter.lm_head") == RF_NONE && rf_find(g, RF_SIDE_DST, 1, "lm_head.weigh") == RF_NONE,
         "alias boundaries");
  /* the padded vocabulary: 1000 rows over TP2 in 1024, rank 1's last 24 never written */
  const rf_plan *v = rf_plan_find("vllm_qwen3_v1000_bf16_tp2");
  rf_tensor_info e;
  EXPECT(rf_describe(v, RF_SIDE_DST, 1, rf_find(v, RF_SIDE_DST, 1, "model.embed_tokens.weight"), &e) == RF_OK &&
         e.shape[0] == 512 && e.pad_rows == 24 && e.bytes == 512 * 256 * 2, "padding: %lld rows, %lld pad",
         (long long)e.shape[0], (long long)e.pad_rows);
}

/* derived views: the table's strides and storage offset, the storage bound once through its first view */
static void test_derived(void)
{
  const rf_plan *p = rf_plan_find("glm_tiny_demo");
  uint32_t uk = rf_find(p, RF_SIDE_DERIVED, 0, "model.layers.0.self_attn.W_UK_T");
  uint32_t uv = rf_find(p, RF_SIDE_DERIVED, 0, "model.layers.0.self_attn.W_UV");
  rf_tensor_info a, b;
  EXPECT(rf_describe(p, RF_SIDE_DERIVED, 0, uk, &a) == RF_OK && rf_describe(p, RF_SIDE_DERIVED, 0, uv, &b) == RF_OK, "describe");
  EXPECT(a.bytes == 65536 && a.storage == uk && a.view_of == RF_NONE && a.offset == 0 && a.stride[0] == 128 &&
         a.stride[1] == 1 && a.stride[2] == 256, "W_UK_T info");
  EXPECT(b.bytes == 0 && b.storage == uk && b.offset == 64 && b.stride[0] == 128 && b.stride[1] == 256 && b.stride[2] == 1,
         "W_UV info: bytes %llu storage %u offset %lld", (unsigned long long)b.bytes, b.storage, (long long)b.offset);
  rf_config cfg = {.plan = p, .role = RF_RECEIVER, .rank = 0, .token = 1, .ucx_tls = "tcp"};
  static uint16_t storage[32768];
  int64_t uk_shape[3] = {2, 64, 128}, uk_st[3] = {128, 1, 256}, uv_shape[3] = {2, 128, 64}, uv_st[3] = {128, 256, 1};
  rf_tensor tk = {.data = storage, .device_type = 1, .dtype_code = 4, .dtype_bits = 16, .dtype_lanes = 1, .ndim = 3,
                  .shape = uk_shape, .strides = uk_st, .row0 = -1, .offset = 0};
  rf_tensor tv = tk;
  tv.data = storage + 64, tv.shape = uv_shape, tv.strides = uv_st, tv.offset = 64;
  char err[512], want[600];
  EXPECT(rf_check(&cfg, RF_SIDE_DERIVED, uk, &tk, err, sizeof err) == RF_OK && err[0] == 0, "W_UK_T: %s", err);
  EXPECT(rf_check(&cfg, RF_SIDE_DERIVED, uv, &tv, err, sizeof err) == RF_OK, "W_UV: %s", err);
  rf_tensor bad = tv;
  bad.strides = NULL; /* a contiguous copy */
  snprintf(want, sizeof want, "tensor 'model.layers.0.self_attn.W_UV' (derived %u, receiver 0): strides [8192, 64, 1] "
           "(elements), expected [128, 256, 1]: not the view of its storage that the plan's engine profile describes", uv);
  EXPECT(rf_check(&cfg, RF_SIDE_DERIVED, uv, &bad, err, sizeof err) == RF_ERR_TYPE && strcmp(err, want) == 0, "got '%s'", err);
  bad = tv, bad.offset = 0;
  snprintf(want, sizeof want, "tensor 'model.layers.0.self_attn.W_UV' (derived %u, receiver 0): storage offset 0 "
           "(elements), expected 64: not the view of its storage that the plan's engine profile describes", uv);
  EXPECT(rf_check(&cfg, RF_SIDE_DERIVED, uv, &bad, err, sizeof err) == RF_ERR_TYPE && strcmp(err, want) == 0, "got '%s'", err);
  rf_engine *e = NULL;
  if (rf_open(&cfg, &e) != RF_OK) {
    EXPECT(0, "rf_open: %s", rf_last_error(e));
    rf_close(e);
    return;
  }
  snprintf(want, sizeof want, "tensor 'model.layers.0.self_attn.W_UV' (derived %u): nothing to bind, it lies in the storage "
           "bound through 'model.layers.0.self_attn.W_UK_T' (derived %u)", uv, uk);
  EXPECT(rf_bind(e, RF_SIDE_DERIVED, uv, &tv, err, sizeof err) == RF_OK && strcmp(err, want) == 0, "got '%s'", err);
  EXPECT(rf_bind(e, RF_SIDE_DERIVED, uk, &tk, err, sizeof err) == RF_OK && err[0] == 0, "W_UK_T binds its storage: %s", err);
  rf_close(e);
  /* views of a bf16 kv_b_proj lie in its memory: checked, nothing bound */
  const rf_plan *q = rf_plan_find("vllm_glm5_bf16_tp1");
  uint32_t qv = rf_find(q, RF_SIDE_DERIVED, 0, "model.layers.0.self_attn.W_UV");
  uint32_t kv = rf_find(q, RF_SIDE_DST, 0, "model.layers.0.self_attn.kv_b_proj.weight");
  rf_tensor_info c;
  EXPECT(rf_describe(q, RF_SIDE_DERIVED, 0, qv, &c) == RF_OK && c.view_of == kv && c.storage == RF_NONE && c.bytes == 0 &&
         c.offset == 192 * 512, "view of kv_b_proj: view_of %u storage %u", c.view_of, c.storage);
  cfg.plan = q;
  if (rf_open(&cfg, &e) != RF_OK) {
    EXPECT(0, "rf_open: %s", rf_last_error(e));
    rf_close(e);
    return;
  }
  static uint16_t kvb[1792 * 512];
  int64_t shape[3] = {4, 512, 256}, st[3] = {229376, 1, 512};
  rf_tensor t = {.data = kvb + 192 * 512, .device_type = 1, .dtype_code = 4, .dtype_bits = 16, .dtype_lanes = 1, .ndim = 3,
                 .shape = shape, .strides = st, .row0 = -1, .offset = 192 * 512};
  snprintf(want, sizeof want, "tensor 'model.layers.0.self_attn.W_UV' (derived %u): nothing to bind, a view of "
           "'model.layers.0.self_attn.kv_b_proj.weight' (dst %u) that changes with that tensor", qv, kv);
  EXPECT(rf_bind(e, RF_SIDE_DERIVED, qv, &t, err, sizeof err) == RF_OK && strcmp(err, want) == 0, "got '%s'", err);
  rf_close(e);
}

/* rf_dtype_size, rf_shard_rows (torch.chunk's cut, values worked out by hand), rf_fp8_scale_bytes, and
 * rf_src_rows against the FSDP2 chunk of each source's dim 0 computed here from its shape */
static void test_small_facts(void)
{
  EXPECT(rf_dtype_size(RF_BF16) == 2 && rf_dtype_size(RF_FP32) == 4 && rf_dtype_size(RF_FP8) == 1 &&
             rf_dtype_size(0) == 0 && rf_dtype_size(9) == 0,
         "rf_dtype_size: bf16 %zu fp32 %zu fp8 %zu, 0: %zu, 9: %zu", rf_dtype_size(RF_BF16), rf_dtype_size(RF_FP32),
         rf_dtype_size(RF_FP8), rf_dtype_size(0), rf_dtype_size(9));
  static const struct { int64_t rows; uint32_t shards, shard; int64_t first, count; } cut[] = {
    {5, 4, 0, 0, 2}, {5, 4, 1, 2, 2}, {5, 4, 2, 4, 1}, {5, 4, 3, 5, 0}, {5, 4, 4, 5, 0}, {8, 3, 0, 0, 3},
    {8, 3, 1, 3, 3}, {8, 3, 2, 6, 2}, {3, 4, 2, 2, 1}, {3, 4, 3, 3, 0}, {6, 4, 2, 4, 2}, {6, 4, 3, 6, 0},
    {7, 1, 0, 0, 7}, {0, 2, 1, 0, 0}, {5, 0, 0, 5, 0}, {151936, 8, 7, 132944, 18992},
  };
  for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
    int64_t first = -1, count = -1;
    rf_shard_rows(cut[i].rows, cut[i].shards, cut[i].shard, &first, &count);
    EXPECT(first == cut[i].first && count == cut[i].count, "rf_shard_rows(%lld, %u, %u): [%lld, +%lld), want [%lld, +%lld)",
           (long long)cut[i].rows, cut[i].shards, cut[i].shard, (long long)first, (long long)count,
           (long long)cut[i].first, (long long)cut[i].count);
  }
  EXPECT(rf_fp8_scale_bytes(1, 1) == 4 && rf_fp8_scale_bytes(128, 128) == 4 && rf_fp8_scale_bytes(129, 128) == 8 &&
             rf_fp8_scale_bytes(129, 257) == 24 && rf_fp8_scale_bytes(0, 5) == 0,
         "rf_fp8_scale_bytes: %llu %llu %llu %llu %llu", (unsigned long long)rf_fp8_scale_bytes(1, 1),
         (unsigned long long)rf_fp8_scale_bytes(128, 128), (unsigned long long)rf_fp8_scale_bytes(129, 128),
         (unsigned long long)rf_fp8_scale_bytes(129, 257), (unsigned long long)rf_fp8_scale_bytes(0, 5));
  int shards_seen = 0;
  for (size_t k = 0; k < sizeof small / sizeof small[0]; k++) {
    const rf_plan *p = rf_plan_find(small[k]);
    if (!p) continue;
    for (uint32_t i = 0; i < p->n_src; i++) {
      const rf_src_tensor *s = &p->src[i];
      int64_t d0 = s->shape[0], inner = s->rows / d0, c = (d0 + p->fsdp - 1) / p->fsdp;
      for (uint32_t sh = 0; sh < p->fsdp; sh++) {
        int64_t a = (int64_t)sh * c < d0 ? (int64_t)sh * c : d0, b = a + c < d0 ? a + c : d0, first = -1, count = -1;
        int64_t want_first = s->travel == RF_TRAVEL_SHARD ? a * inner : 0;
        int64_t want_count = s->travel == RF_TRAVEL_SHARD ? (b - a) * inner : s->rows;
        rf_src_rows(s, sh, &first, &count);
        shards_seen += s->travel == RF_TRAVEL_SHARD;
        EXPECT(first == want_first && count == want_count, "%s '%s' shard %u of %u: rf_src_rows [%lld, +%lld), want "
               "[%lld, +%lld)", p->name, s->name, sh, p->fsdp, (long long)first, (long long)count,
               (long long)want_first, (long long)want_count);
      }
    }
  }
  EXPECT(shards_seen > 0, "no sharded source in the small plans");
}

static const expect_test tests[] = {
  {"rf_dtype_size, rf_shard_rows, rf_src_rows, rf_fp8_scale_bytes", test_small_facts},
  {"rf_list and rf_describe equal the engine's rf_src_bytes (small plans, every rank)", test_lists_match_engine},
  {"rf_bind refusals and acceptance", test_bind},
  {"source shapes, destination strides, aliases and padding as the tables say (every plan)", test_shapes},
  {"derived views: strides, storage offset, the storage bound once", test_derived},
};

int main(void)
{
  return run_tests(tests, sizeof tests / sizeof tests[0], NULL, 120);
}
