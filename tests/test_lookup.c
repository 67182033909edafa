/* test_lookup.c: discovery and typed binding (runtime/lookup.c) under the sanitizers: what rf_list
 * says a rank binds equals what the engine's own rf_src_bytes wants, for every rank and tensor of
 * the small plans; rf_bind's refusals carry the tensor, expected and got; an accepted rf_bind is
 * the engine's rf_bind_src. The Python tests cover every message through the module. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plans.h"
#include "refit.h"

#include "expect.h"

static const char *const small[] = {"glm_tiny_demo", "glm_tiny_rep2", "qwen3_moe_tiny_ep2", "qwen3_tiny_fp8_tp4",
                                    "qwen3_tiny_tp2"};

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

static const struct {
  const char *name;
  void (*fn)(void);
} tests[] = {
  {"rf_list and rf_describe equal the engine's rf_src_bytes (small plans, every rank)", test_lists_match_engine},
  {"rf_bind refusals and acceptance", test_bind},
};

int main(void)
{
  int passed = 0, failed = 0;
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) run_forked(tests[i].name, tests[i].fn, 120) ? passed++ : failed++;
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
