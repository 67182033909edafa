/* blob.c: the receiver's metadata blob, sent in answer to a valid HELLO and exportable for engines
 * with their own rendezvous. Little-endian, every field checked before use:
 *
 *   0   u32 magic "RFIT"    4  u32 format (3)     8  u64 layout hash
 *   16  u32 receiver        20 u32 n entries      24 u32 worker address bytes   28 u32 zero
 *   32  worker address, padded to 8
 *   n x { u32 id, u32 key bytes, u64 address, u64 bytes, key, padded to 8 }
 *   u64 MAC (SipHash-2-4 keyed by the token) of every byte before it
 *
 * Entries: the receiver's tensors in table order (id = dst_first + i) with exactly the table's sizes,
 * then in delta plans its patch area (id RF__AREA_PATCH, the table's patch_bytes) and its directory
 * (RF__AREA_DIR, 16 bytes per write it receives). The MAC is checked before any other field, so a
 * forged or corrupted blob never reaches the parser below or UCX (which would parse the worker
 * address and remote keys). Format 2: format 1 had an unkeyed checksum; format 3 adds the areas. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define BLOB_FORMAT 3u
#define HEADER 32u

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }
static uint32_t rd32(const uint8_t *b) { uint32_t v; memcpy(&v, b, 4); return v; }
static uint64_t rd64(const uint8_t *b) { uint64_t v; memcpy(&v, b, 8); return v; }
static void wr32(uint8_t *b, uint32_t v) { memcpy(b, &v, 4); }
static void wr64(uint8_t *b, uint64_t v) { memcpy(b, &v, 8); }

uint32_t rf__blob_areas(const rf_plan *p, uint32_t r) { return p->delta_ppm && p->recv[r].patch_bytes ? 2 : 0; }

uint64_t rf__dir_bytes(const rf_plan *p, uint32_t r)
{
  return 16 * (uint64_t)p->recv[r].write_count; /* an entry per write it receives */
}

size_t rf__blob_size(uint32_t worker_addr_len, uint32_t n, const uint32_t *rkey_len)
{
  size_t s = HEADER + pad8(worker_addr_len);
  for (uint32_t i = 0; i < n; i++) s += 24 + pad8(rkey_len[i]);
  return s + 8;
}

size_t rf__blob_write(uint8_t *buf, const rf_plan *p, const rf__key *k, uint32_t recv, const void *worker_addr,
                      uint32_t worker_addr_len, uint32_t n, const rf__blob_entry *en)
{
  size_t o = 0;
  wr32(buf, RF__MAGIC);
  wr32(buf + 4, BLOB_FORMAT);
  wr64(buf + 8, p->layout_hash);
  wr32(buf + 16, recv);
  wr32(buf + 20, n);
  wr32(buf + 24, worker_addr_len);
  wr32(buf + 28, 0);
  o = HEADER;
  memset(buf + o, 0, pad8(worker_addr_len));
  memcpy(buf + o, worker_addr, worker_addr_len);
  o += pad8(worker_addr_len);
  for (uint32_t i = 0; i < n; i++) {
    wr32(buf + o, en[i].id);
    wr32(buf + o + 4, en[i].rkey_len);
    wr64(buf + o + 8, en[i].addr);
    wr64(buf + o + 16, en[i].bytes);
    o += 24;
    memset(buf + o, 0, pad8(en[i].rkey_len));
    memcpy(buf + o, en[i].rkey, en[i].rkey_len);
    o += pad8(en[i].rkey_len);
  }
  wr64(buf + o, rf__mac(k, buf, o));
  return o + 8;
}

#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return RF_ERR_BLOB; } while (0)

/* UCX's address parser trusts its input (ucp_address_unpack asserts on the version nibble and reads
 * lengths without bounds), so what UCX 1.13..1.22 could have packed is checked here first. Byte 0:
 * low nibble the format, 0 (v1: flags in the high nibble) or 1 (v2: release version in the high
 * nibble, flags in byte 1, of which 4 bits are defined); then the worker uuid (v1: always; v2: flag
 * bit 1), the client id (flag bit 2) and at least one device byte. */
int rf__addr_check(const uint8_t *a, uint32_t len, char *err, size_t errlen)
{
  if (len < 2) return snprintf(err, errlen, "worker address of %u bytes is too short", len), -1;
  uint32_t format = a[0] & 15u, flags = format == 0 ? a[0] >> 4 : a[1];
  if (format > 1)
    return snprintf(err, errlen, "worker address format %u (byte 0 = 0x%02x): UCX packs format 0 or 1", format, a[0]), -1;
  if (flags > 15u)
    return snprintf(err, errlen, "worker address flags 0x%02x (byte 1): UCX defines 4 flag bits", flags), -1;
  uint32_t need = (format == 0 ? 1 : 2) + (format == 0 || (flags & 2u) ? 8 : 0) + ((flags & 4u) ? 8 : 0) + 1;
  if (len < need)
    return snprintf(err, errlen, "worker address of %u bytes, its header (format %u, flags 0x%x) needs %u", len, format,
                    flags, need), -1;
  return 0;
}

rf_status rf__blob_parse(const rf_plan *p, const rf__key *k, const void *data, size_t len, rf__blob_view *v, char *err,
                         size_t errlen)
{
  const uint8_t *b = data;
  if (len < HEADER + 8) BAD("%zu bytes, shorter than the %u-byte header and checksum", len, HEADER + 8);
  if (rd32(b) != RF__MAGIC) BAD("bad magic %08x at offset 0", rd32(b));
  if (rd32(b + 4) != BLOB_FORMAT) BAD("format %u at offset 4, expected %u", rd32(b + 4), BLOB_FORMAT);
  if (rd64(b + len - 8) != rf__mac(k, b, len - 8))
    BAD("MAC mismatch: corrupted, truncated, forged, or exported with another token (%zu bytes)", len);
  if (rd64(b + 8) != p->layout_hash)
    BAD("layout hash %016llx, expected %016llx (plan %s)", (unsigned long long)rd64(b + 8),
        (unsigned long long)p->layout_hash, p->name);
  uint32_t recv = rd32(b + 16), n = rd32(b + 20), alen = rd32(b + 24);
  if (recv >= p->receivers) BAD("receiver %u out of range (plan %s has %u)", recv, p->name, p->receivers);
  const rf_receiver *r = &p->recv[recv];
  uint32_t areas = rf__blob_areas(p, recv);
  if (n != r->dst_count + areas)
    BAD("%u entries, receiver %u has %u tensors and %u areas", n, recv, r->dst_count, areas);
  if (rd32(b + 28) != 0) BAD("reserved field at offset 28 is not zero");
  size_t end = len - 8, o = HEADER;
  if (alen == 0 || alen > end - o || pad8(alen) > end - o) BAD("worker address of %u bytes overruns the blob", alen);
  char why[160];
  if (rf__addr_check(b + o, alen, why, sizeof why)) BAD("receiver %u: %s", recv, why);
  v->recv = recv;
  v->worker_addr = b + o;
  v->worker_addr_len = alen;
  o += pad8(alen);
  v->entries = b + o;
  v->n = r->dst_count;
  v->n_areas = areas;
  for (uint32_t i = 0; i < n; i++) {
    if (end - o < 24) BAD("entry %u of %u at offset %zu overruns the blob", i, n, o);
    uint32_t id = rd32(b + o), klen = rd32(b + o + 4);
    uint64_t addr = rd64(b + o + 8), bytes = rd64(b + o + 16);
    const char *what = i < r->dst_count ? NULL : i == r->dst_count ? "patch area" : "directory";
    uint32_t want_id = !what ? r->dst_first + i : i == r->dst_count ? RF__AREA_PATCH : RF__AREA_DIR;
    uint64_t want = !what ? 0 : i == r->dst_count ? r->patch_bytes : rf__dir_bytes(p, recv);
    if (id != want_id) BAD("entry %u at offset %zu has id %u, expected %u", i, o, id, want_id);
    if (!what && bytes != p->dst[id].bytes)
      BAD("tensor '%s' (dst %u): %llu bytes, the table says %llu", p->dst[id].name, id, (unsigned long long)bytes,
          (unsigned long long)p->dst[id].bytes);
    if (what && bytes != want)
      BAD("%s of receiver %u: %llu bytes, the table says %llu", what, recv, (unsigned long long)bytes, (unsigned long long)want);
    if (addr == 0 && !what) BAD("tensor '%s' (dst %u): null address", p->dst[id].name, id);
    if (addr == 0 && what) BAD("%s of receiver %u: null address", what, recv);
    o += 24;
    if (klen == 0 || klen > end - o || pad8(klen) > end - o) {
      if (!what) BAD("tensor '%s' (dst %u): key of %u bytes overruns the blob", p->dst[id].name, id, klen);
      BAD("%s of receiver %u: key of %u bytes overruns the blob", what, recv, klen);
    }
    o += pad8(klen);
  }
  if (o != end) BAD("%zu trailing bytes after the last entry", end - o);
  return RF_OK;
}

void rf__blob_entry_at(const rf__blob_view *v, uint32_t i, rf__blob_entry *out)
{
  const uint8_t *b = v->entries;
  for (uint32_t k = 0;; k++) {
    uint32_t klen = rd32(b + 4);
    if (k == i) {
      out->id = rd32(b);
      out->rkey_len = klen;
      out->addr = rd64(b + 8);
      out->bytes = rd64(b + 16);
      out->rkey = b + 24;
      return;
    }
    b += 24 + pad8(klen);
  }
}
