/* fuzz_blob.c: libFuzzer target for the metadata blob parser (rf__blob_parse), the one parser
 * that reads bytes from a peer. Mode byte 0: the input is the blob. Mode 1: the input describes a
 * well-formed blob for receiver 0 of glm_tiny_demo (key sizes of its tensors, patch area and
 * directory), then byte edits (offset, value), then optionally a recomputed MAC (the fuzzer holds the
 * token), so it gets past the MAC into every field. The worker address starts as UCX packs one
 * (format 0, flags in the high nibble, the worker uuid, device bytes), so edits reach its header. A
 * blob the parser accepts must have every entry inside the buffer with the table's sizes (ASan
 * checks the reads) and a worker address whose header UCX parses without asserting (format 0 or 1,
 * format 1 with a flag byte below 16): a token-signed blob with another one aborted rf_import inside
 * UCX (address.c: "Assertion '*addr_version == UCP_OBJECT_VERSION_V2' failed"). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "glm_tiny_demo.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const rf__key *key_of_test(void)
{
  static rf__key k;
  k = rf__token_key(0x5ec2e7);
  return &k;
}

static void check(const uint8_t *buf, size_t len)
{
  const rf_plan *p = &rf_plan_glm_tiny_demo;
  rf__blob_view v;
  char err[200];
  if (rf__blob_parse(p, key_of_test(), buf, len, &v, err, sizeof err) != RF_OK) {
    if (!err[0]) abort(); /* a rejection always says why */
    return;
  }
  volatile uint8_t sink = 0;
  for (uint32_t i = 0; i < v.worker_addr_len; i++) sink ^= v.worker_addr[i];
  /* what ucp_address_unpack asserts, restated: format (low nibble of byte 0) 0 or 1, format 1's flags */
  if (v.worker_addr_len < 2 || (v.worker_addr[0] & 15) > 1 || ((v.worker_addr[0] & 15) == 1 && v.worker_addr[1] > 15))
    abort();
  if (v.n_areas != rf__blob_areas(p, v.recv)) abort();
  for (uint32_t i = 0; i < v.n + v.n_areas; i++) {
    rf__blob_entry e;
    rf__blob_entry_at(&v, i, &e);
    if (e.rkey < buf || e.rkey + e.rkey_len > buf + len) abort();
    uint64_t want = i < v.n ? p->dst[e.id].bytes : e.id == RF__AREA_PATCH ? p->recv[v.recv].patch_bytes : rf__dir_bytes(p, v.recv);
    if (e.bytes != want || (i >= v.n && e.id != (i == v.n ? RF__AREA_PATCH : RF__AREA_DIR))) abort();
    for (uint32_t k = 0; k < e.rkey_len; k++) sink ^= e.rkey[k];
  }
  (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1) return 0;
  if (data[0] % 2 == 0) {
    uint8_t *copy = malloc(size - 1 + 1); /* exact-size heap copy: ASan sees any overrun */
    memcpy(copy, data + 1, size - 1);
    check(copy, size - 1);
    free(copy);
    return 0;
  }
  const rf_plan *p = &rf_plan_glm_tiny_demo;
  const rf_receiver *r = &p->recv[0];
  uint32_t nd = r->dst_count < 510 ? r->dst_count : 510, n = nd + rf__blob_areas(p, 0), klen[512];
  rf__blob_entry en[512];
  uint8_t key[64] = {0}, waddr[64];
  for (int i = 0; i < 64; i++) waddr[i] = (uint8_t)(i * 37 + 11);
  waddr[0] = 0x20; /* format 0, flag worker uuid (UCX's default address) */
  size_t at = 1;
  for (uint32_t i = 0; i < n; i++) {
    klen[i] = at < size ? (uint32_t)(data[at++] % 48) + 1 : 16;
    en[i] = (rf__blob_entry){.id = r->dst_first + i, .addr = 0x1000 + i, .bytes = i < nd ? p->dst[r->dst_first + i].bytes : 0,
                             .rkey = key, .rkey_len = klen[i]};
    if (i == nd) en[i].id = RF__AREA_PATCH, en[i].bytes = r->patch_bytes;
    if (i == nd + 1) en[i].id = RF__AREA_DIR, en[i].bytes = rf__dir_bytes(p, 0);
  }
  uint32_t alen = at < size ? (uint32_t)(data[at++] % 64) + 1 : 8;
  size_t len = rf__blob_size(alen, n, klen);
  uint8_t *buf = malloc(len);
  rf__blob_write(buf, p, key_of_test(), 0, waddr, alen, n, en);
  int fix = at < size ? data[at++] & 1 : 0;
  while (at + 3 <= size) { /* edits: 16-bit offset, value */
    size_t off = ((size_t)data[at] << 8 | data[at + 1]) % len;
    buf[off] = data[at + 2];
    at += 3;
  }
  size_t cut = len;
  if (data[0] & 2) cut = len - (data[0] >> 2) % 16; /* truncation */
  if (fix && cut >= 8) {
    uint64_t h = rf__mac(key_of_test(), buf, cut - 8);
    memcpy(buf + cut - 8, &h, 8);
  }
  check(buf, cut);
  free(buf);
  return 0;
}
