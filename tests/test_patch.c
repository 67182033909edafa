/* test_patch.c: the receiver's checks of delta pushes (runtime/patch.c), in one process. A receiver
 * of qwen3_tiny_tp2 is opened and bound, with a patch area of its own (rf__patch_open, as rf_listen
 * makes one) whose complete version is 5; the test then plays
 * trainer rank 0's part of a delta push by hand: real patches (the C reference encoder) in its
 * slots of the patch area and its directory entries, as the trainer's puts would leave them, and
 * calls the checks a DONE and a complete version run. Each way an authenticated trainer can get it
 * wrong (the patches' base, sizes against the slots and the DONE, a malformed patch, a digest that
 * differs, a region sent dense) gets its exact reason, and a good push gives exactly the new bytes.
 * Tests share one engine and restore what they changed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "plans.h"

#include "expect.h"

static rf_engine *e;
static rf__patch *pa;      /* the test's own patch area of receiver 0 (patch.c), its complete version 5 */
static const rf_receiver *rv;
static uint8_t delta[64];  /* peers whose DONE came with patches */
static uint64_t applied;   /* patch bytes of the last rf__patch_apply */
static const rf_plan *p;
static uint8_t **mem;      /* the bound tensors */
static uint8_t **old, **nxt; /* per write of peer 0: the base bytes and the new bytes */
static uint32_t first, count, rank, big; /* peer 0's writes in pa, its trainer rank, its largest write */
static uint64_t total;     /* patch bytes of peer 0 */

static uint8_t *dst_of(uint32_t i)
{
  const rf_write *w = &p->writes[rf__patch_write(pa, i)];
  return mem[w->dst - rv->dst_first] + w->dst_off;
}
static uint64_t rd64(const uint8_t *b) { uint64_t v; memcpy(&v, b, 8); return v; }
static void wr64(uint8_t *b, uint64_t v) { memcpy(b, &v, 8); }
static uint8_t *entry(uint32_t i) { return rf__patch_dir(pa) + 16 * (size_t)i; }

/* dst back to the base bytes */
static void reset(void)
{
  for (uint32_t j = 0; j < count; j++) memcpy(dst_of(first + j), old[j], p->writes[rf__patch_write(pa, first + j)].len);
}

static int setup(void)
{
  p = rf_plan_find("qwen3_tiny_tp2");
  rf_config cfg = {.plan = p, .role = RF_RECEIVER, .rank = 0, .token = 7, .ucx_tls = "tcp"};
  if (!p || rf_open(&cfg, &e) != RF_OK) return printf("  rf_open: %s\n", e ? rf_last_error(e) : "no plan"), -1;
  rv = &p->recv[0];
  mem = calloc(rv->dst_count, sizeof *mem);
  srand(16);
  for (uint32_t i = 0; i < rv->dst_count; i++) {
    uint64_t n = p->dst[rv->dst_first + i].bytes;
    mem[i] = malloc(n);
    for (uint64_t k = 0; k < n; k++) mem[i][k] = (uint8_t)rand();
    if (rf_bind_dst(e, rv->dst_first + i, mem[i], n) != RF_OK) return printf("  bind: %s\n", rf_last_error(e)), -1;
  }
  if (rv->peer_count > sizeof delta || rf__patch_open(e, rv, (void *const *)mem, &pa) != RF_OK)
    return printf("  patch area: %s\n", rf_last_error(e)), -1;
  first = rf__patch_first(pa, 0);
  count = rf__patch_first(pa, 1) - first;
  rank = p->peers[rv->peer_first].trainer;
  old = calloc(count, sizeof *old);
  nxt = calloc(count, sizeof *nxt);
  /* version 6: one bf16 element in 997 changes (element j % 997 of write j first), region by region as
   * the trainer's encoder sees it: every record a LIST */
  for (uint32_t j = 0; j < count; j++) {
    const rf_write *w = &p->writes[rf__patch_write(pa, first + j)];
    if (w->len > p->writes[rf__patch_write(pa, first + big)].len) big = j;
    old[j] = malloc(w->len);
    nxt[j] = malloc(w->len);
    memcpy(old[j], dst_of(first + j), w->len);
    memcpy(nxt[j], old[j], w->len);
    for (uint64_t k = (uint64_t)j % 997 * 2; k + 1 < w->len; k += 997 * 2) nxt[j][k] ^= 0x11, nxt[j][k + 1] ^= 0x22;
    uint8_t *slot = malloc(w->len);
    memcpy(slot, old[j], w->len);
    rfk_delta_region r = {.next = nxt[j], .old = slot, .n = w->len, .esize = 2, .patch = rf__patch_base(pa) + w->patch_off,
                          .cap = w->patch_cap};
    rfk_delta_out out;
    if (rfk_ref_delta_encode(&r, 1, &out) != RFK_OK || out.status != RFK_OK)
      return printf("  encode of write %u: status %d, %llu of %llu bytes\n", rf__patch_write(pa, first + j), out.status,
                    (unsigned long long)out.size, (unsigned long long)w->patch_cap), -1;
    wr64(entry(first + j), out.size);
    wr64(entry(first + j) + 8, out.digest);
    total += out.size;
    free(slot);
  }
  memset(delta, 0, rv->peer_count);
  delta[0] = 1;
  return 0;
}

static char why[512];

static void test_done_ok(void)
{
  EXPECT(rf__patch_done(e, pa, rv, 0, 6, total, 5, 5, why, sizeof why) == 0, "a good DONE refused: %s", why);
}

static void test_done_base(void)
{
  char want[256];
  snprintf(want, sizeof want, "trainer rank %u sent version 6 as patches to version 4, but this receiver's complete "
           "version is 5", rank);
  why[0] = 0;
  EXPECT(rf__patch_done(e, pa, rv, 0, 6, total, 4, 5, why, sizeof why) == -1 && strcmp(why, want) == 0, "base 4: '%s'", why);
  snprintf(want, sizeof want, "trainer rank %u sent version 6 as patches to version 0, but this receiver's complete "
           "version is 5", rank);
  EXPECT(rf__patch_done(e, pa, rv, 0, 6, total, 0, 5, why, sizeof why) == -1 && strcmp(why, want) == 0, "base 0: '%s'", why);
}

static void test_done_total(void)
{
  char want[256];
  snprintf(want, sizeof want, "trainer rank %u's directory lists %llu patch bytes for version 6, its DONE says %llu", rank,
           (unsigned long long)total, (unsigned long long)total + 4);
  EXPECT(rf__patch_done(e, pa, rv, 0, 6, total + 4, 5, 5, why, sizeof why) == -1 && strcmp(why, want) == 0, "total: '%s'", why);
}

static void test_done_sizes(void)
{
  uint32_t j = count / 2, i = first + j;
  const rf_write *w = &p->writes[rf__patch_write(pa, i)];
  uint64_t size = rd64(entry(i));
  const uint64_t bad[] = {w->patch_cap + 4, 8};
  for (int k = 0; k < 2; k++) {
    wr64(entry(i), bad[k]);
    char want[320];
    snprintf(want, sizeof want, "trainer rank %u's patch of version 6 for '%s' (write %u, bytes [%llu, +%llu)) is %llu "
             "bytes, its slot holds %llu (at least 32)", rank, p->dst[w->dst].name, rf__patch_write(pa, i),
             (unsigned long long)w->dst_off, (unsigned long long)w->len, (unsigned long long)bad[k],
             (unsigned long long)w->patch_cap);
    EXPECT(rf__patch_done(e, pa, rv, 0, 6, total - size + bad[k], 5, 5, why, sizeof why) == -1 && strcmp(why, want) == 0,
           "size %llu: '%s'", (unsigned long long)bad[k], why);
  }
  wr64(entry(i), size);
}

static void test_apply_ok(void)
{
  reset();
  uint32_t bad = 7;
  EXPECT(rf__patch_apply(e, pa, delta, 6, &applied, &bad, why, sizeof why) == 0, "a good version refused: %s", why);
  for (uint32_t j = 0; j < count; j++) {
    const rf_write *w = &p->writes[rf__patch_write(pa, first + j)];
    EXPECT(memcmp(dst_of(first + j), nxt[j], w->len) == 0, "write %u: patched bytes differ from the new ones", rf__patch_write(pa, first + j));
  }
  EXPECT(applied == total, "%llu patch bytes applied, want %llu", (unsigned long long)applied, (unsigned long long)total);
}

static void test_apply_malformed(void)
{
  reset();
  uint32_t j = big, i = first + j, bad = 7;
  const rf_write *w = &p->writes[rf__patch_write(pa, i)];
  rf__patch_base(pa)[w->patch_off + 1] ^= 0xff; /* the magic: "RFD1" becomes 52 b9 44 31 */
  char want[400];
  snprintf(want, sizeof want, "trainer rank %u's patch of version 6 for '%s' (write %u, bytes [%llu, +%llu)) is malformed: "
           "magic 0x3144b952, expected 0x31444652", rank, p->dst[w->dst].name, rf__patch_write(pa, i), (unsigned long long)w->dst_off,
           (unsigned long long)w->len);
  EXPECT(rf__patch_apply(e, pa, delta, 6, &applied, &bad, why, sizeof why) == -1 && strcmp(why, want) == 0 && bad == 0, "magic: '%s' (peer %u)", why,
         bad);
  EXPECT(memcmp(dst_of(i), old[j], w->len) == 0, "the malformed patch wrote into its region");
  rf__patch_base(pa)[w->patch_off + 1] ^= 0xff;
  /* an entry's element index past its chunk: the patch's first record is a LIST */
  reset();
  uint8_t *pt = rf__patch_base(pa) + w->patch_off;
  uint32_t P, m;
  memcpy(&m, pt + 16, 4);
  memcpy(&P, pt + 20, 4);
  uint8_t *dir = pt + 32 + ((P + 3) & ~3u), saved = pt[32 + 1];
  uint32_t meta;
  memcpy(&meta, dir + 8, 4);
  EXPECT(m >= 1 && meta >> 24 == RFK_DELTA_LIST, "unexpected first record: %u entries, mode %u", m, meta >> 24);
  pt[32 + 1] = 0xff; /* the high byte of the first change's index: at least 65280 */
  EXPECT(rf__patch_apply(e, pa, delta, 6, &applied, &bad, why, sizeof why) == -1 && strstr(why, "is malformed: entry 0 (chunk 0): element index ") &&
             strstr(why, " at position 0 not below "),
         "index: '%s'", why);
  pt[32 + 1] = saved;
}

static void test_apply_digest(void)
{
  reset();
  uint32_t j = big, i = first + j, bad = 7;
  const rf_write *w = &p->writes[rf__patch_write(pa, i)];
  uint64_t d = rd64(entry(i) + 8);
  wr64(entry(i) + 8, d ^ 1);
  char want[400];
  snprintf(want, sizeof want, "trainer rank %u's region '%s' (write %u, bytes [%llu, +%llu)) of version 6: digest %016llx "
           "after the patch, the trainer's %016llx", rank, p->dst[w->dst].name, rf__patch_write(pa, i), (unsigned long long)w->dst_off,
           (unsigned long long)w->len, (unsigned long long)d, (unsigned long long)(d ^ 1));
  EXPECT(rf__patch_apply(e, pa, delta, 6, &applied, &bad, why, sizeof why) == -1 && strcmp(why, want) == 0 && bad == 0, "digest: '%s'", why);
  wr64(entry(i) + 8, d);
  /* the base was not what the trainer thought: one byte of the receiver's region differs (an element
   * the patch does not change) */
  reset();
  dst_of(i)[(j % 997 + 1) * 2] ^= 0x40;
  EXPECT(rf__patch_apply(e, pa, delta, 6, &applied, &bad, why, sizeof why) == -1 && strstr(why, "after the patch, the trainer's "),
         "a changed base: '%s'", why);
}

static void test_apply_dense_region(void)
{
  /* a region whose patch overflowed came dense: its new bytes are in place, its entry says 0 */
  reset();
  uint32_t j = 0, i = first + j, bad = 7;
  const rf_write *w = &p->writes[rf__patch_write(pa, i)];
  uint64_t size = rd64(entry(i));
  wr64(entry(i), 0);
  memcpy(dst_of(i), nxt[j], w->len);
  EXPECT(rf__patch_apply(e, pa, delta, 6, &applied, &bad, why, sizeof why) == 0, "a region sent dense refused: %s", why);
  EXPECT(applied == total - size, "%llu patch bytes applied, want %llu", (unsigned long long)applied,
         (unsigned long long)(total - size));
  reset(); /* its dense write did not arrive: the digest says so */
  char want[400];
  snprintf(want, sizeof want, "trainer rank %u's region '%s' (write %u, bytes [%llu, +%llu)) of version 6: digest ", rank,
           p->dst[w->dst].name, rf__patch_write(pa, i), (unsigned long long)w->dst_off, (unsigned long long)w->len);
  EXPECT(rf__patch_apply(e, pa, delta, 6, &applied, &bad, why, sizeof why) == -1 && strncmp(why, want, strlen(want)) == 0 &&
             strstr(why, " after its dense write, the trainer's "),
         "a dense region that did not arrive: '%s'", why);
  wr64(entry(i), size);
}

static void test_unwritten_directory(void)
{
  /* arming zeroes the directory: a trainer that sent DONE delta without writing its part this version
   * passes the DONE's checks (0 bytes of patches) but none of its regions has digest 0 */
  reset();
  uint8_t *saved = malloc(16 * (size_t)count);
  memcpy(saved, entry(first), 16 * (size_t)count);
  memset(entry(first), 0, 16 * (size_t)count);
  uint32_t bad = 7;
  EXPECT(rf__patch_done(e, pa, rv, 0, 6, 0, 5, 5, why, sizeof why) == 0, "an empty directory part with total 0: %s", why);
  EXPECT(rf__patch_apply(e, pa, delta, 6, &applied, &bad, why, sizeof why) == -1 && bad == 0 &&
             strstr(why, " after its dense write, the trainer's 0000000000000000"),
         "an unwritten directory part: '%s'", why);
  memcpy(entry(first), saved, 16 * (size_t)count);
  free(saved);
}

static void test_only_delta_peers(void)
{
  /* peer 1 sent dense: its regions are not touched or checked, whatever its directory part says */
  reset();
  uint32_t bad = 7;
  uint32_t i = rf__patch_first(pa, 1);
  wr64(entry(i), 12345), wr64(entry(i) + 8, 1);
  EXPECT(rf__patch_apply(e, pa, delta, 6, &applied, &bad, why, sizeof why) == 0, "a dense peer's directory was read: %s", why);
  wr64(entry(i), 0), wr64(entry(i) + 8, 0);
}

/* The index tables are read, not rebuilt, at open: an entry that points at another receiver's or
 * rank's rows is refused there, naming it (a copy of the plan with one entry changed) */
static void test_bad_recv_writes(void)
{
  rf_plan q = *p;
  rf_recv_write *rw = malloc(p->n_recv_writes * sizeof *rw);
  memcpy(rw, p->recv_writes, p->n_recv_writes * sizeof *rw);
  const rf_receiver *r1 = &p->recv[1];
  rw[p->recv[0].write_first + 1].write = rw[r1->write_first].write; /* a write to receiver 1 */
  q.recv_writes = rw;
  q.layout_hash = rf_plan_hash(&q); /* as its generator would have emitted it */
  rf_config cfg = {.plan = &q, .role = RF_RECEIVER, .rank = 0, .token = 7, .ucx_tls = "tcp"};
  rf_engine *r = NULL;
  rf_status st = rf_open(&cfg, &r);
  EXPECT(st == RF_OK, "open: %s", rf_last_error(r));
  if (st != RF_OK) {
    rf_close(r);
    free(rw);
    return;
  }
  for (uint32_t i = 0; i < p->recv[0].dst_count; i++)
    rf_bind_dst(r, p->recv[0].dst_first + i, mem[i], p->dst[p->recv[0].dst_first + i].bytes);
  uint16_t port;
  char want[160];
  snprintf(want, sizeof want, "plan qwen3_tiny_tp2: write %u listed for receiver 0 is not its peer's write to it",
           rw[r1->write_first].write);
  st = rf_listen(r, "127.0.0.1", 0, &port);
  EXPECT(st == RF_ERR_ARG && strstr(rf_last_error(r), want), "listen: %s '%s'", rf_strerror(st), rf_last_error(r));
  rf_close(r);
  free(rw);
}

static void test_bad_targets(void)
{
  rf_plan q = *p;
  rf_target *tg = malloc(p->n_targets * sizeof *tg);
  memcpy(tg, p->targets, p->n_targets * sizeof *tg);
  const rf_rank *r0 = &p->ranks[0], *r1 = &p->ranks[1];
  tg[r0->target_first].peer = tg[r1->target_first].peer; /* rank 1's peer row */
  q.targets = tg;
  q.layout_hash = rf_plan_hash(&q); /* as its generator would have emitted it */
  rf_config cfg = {.plan = &q, .role = RF_TRAINER, .rank = 0, .token = 7, .ucx_tls = "tcp", .delta = 1};
  rf_engine *t = NULL;
  char want[160];
  snprintf(want, sizeof want, "plan qwen3_tiny_tp2: target %u of rank 0 is not one of its peer rows", r0->target_first);
  rf_status st = rf_open(&cfg, &t);
  EXPECT(st == RF_ERR_ARG && strstr(rf_last_error(t), want), "open: %s '%s'", rf_strerror(st), rf_last_error(t));
  rf_close(t);
  free(tg);
}

static void test_bad_regions(void)
{
  rf_plan q = *p;
  rf_region *rg = malloc(p->n_regions * sizeof *rg);
  memcpy(rg, p->regions, p->n_regions * sizeof *rg);
  const rf_rank *r0 = &p->ranks[0];
  rg[r0->region_first].patch_off = r0->patch_bytes; /* past the patch buffer */
  q.regions = rg;
  q.layout_hash = rf_plan_hash(&q); /* as its generator would have emitted it */
  rf_config cfg = {.plan = &q, .role = RF_TRAINER, .rank = 0, .token = 7, .ucx_tls = "tcp", .delta = 1};
  rf_engine *t = NULL;
  char want[160];
  snprintf(want, sizeof want, "plan qwen3_tiny_tp2: region %u of rank 0 lies outside its writes, slots, scratch or "
           "patch buffer", r0->region_first);
  rf_status st = rf_open(&cfg, &t);
  EXPECT(st == RF_ERR_ARG && strstr(rf_last_error(t), want), "open: %s '%s'", rf_strerror(st), rf_last_error(t));
  rf_close(t);
  free(rg);
  /* and the plan itself opens */
  cfg.plan = p;
  st = rf_open(&cfg, &t);
  EXPECT(st == RF_OK, "open of the plan itself: %s '%s'", rf_strerror(st), rf_last_error(t));
  rf_close(t);
}

static const struct {
  const char *name;
  void (*fn)(void);
} tests[] = {
  {"a good delta DONE passes", test_done_ok},
  {"patches against another version than the complete one: refused with the versions", test_done_base},
  {"directory total differs from the DONE's: refused with both", test_done_total},
  {"a patch larger than its slot or shorter than a header: refused naming tensor and write", test_done_sizes},
  {"good patches give exactly the new bytes", test_apply_ok},
  {"malformed patches: refused with the kernel's check, their region untouched", test_apply_malformed},
  {"a digest that differs (the trainer's, or a base that changed): refused with both digests", test_apply_digest},
  {"a region sent dense: checked by its digest", test_apply_dense_region},
  {"a directory part the trainer did not write: every region fails its digest", test_unwritten_directory},
  {"peers that sent dense are not read", test_only_delta_peers},
  {"a receiver's list of writes naming another receiver's write: refused at listen", test_bad_recv_writes},
  {"a trainer's target naming another rank's peer row: refused at open", test_bad_targets},
  {"a region whose patch slot lies past the patch buffer: refused at open", test_bad_regions},
};

int main(void)
{
  if (setup()) {
    printf("0 passed, 1 failed\n");
    return 1;
  }
  int passed = 0, failed = 0;
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    cur_failed = 0;
    tests[i].fn();
    printf("%s %s\n", cur_failed ? "FAIL" : "ok  ", tests[i].name);
    cur_failed ? failed++ : passed++;
  }
  rf__patch_close(e, pa);
  rf_close(e);
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
