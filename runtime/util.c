/* util.c: the leaf every runtime file may call: status texts, the engine's last-error string, the
 * monotonic clock, random numbers, and the keyed MAC that authenticates peers and blobs.
 *
 * The MAC is SipHash-2-4 (Aumasson and Bernstein, 2012): a 64-bit PRF under a 128-bit key, fast on
 * short inputs. Keys: a token's key is the token and its complement; a connection's key is derived
 * from the token's key and both sides' nonces (see rf__session_key). Inputs are domain-separated by
 * a leading message type, so a MAC of one kind never passes for another. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

static const char *const status_text[] = {
#define RF__TEXT(name, text) text,
  RF_STATUS_LIST(RF__TEXT)
#undef RF__TEXT
};

const char *rf_strerror(rf_status s)
{
  if ((unsigned)s >= sizeof status_text / sizeof status_text[0]) return "unknown status";
  return status_text[s];
}

rf_status rf__fail(rf_engine *e, rf_status s, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->err, sizeof e->err, fmt, ap);
  va_end(ap);
  return s;
}

const char *rf_last_error(const rf_engine *e) { return e ? e->err : "no engine (rf_open got no output pointer)"; }

uint64_t rf__now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int rf__past(uint64_t t0, uint32_t ms) { return rf__now_ns() - t0 > (uint64_t)ms * 1000000u; }

uint64_t rf__random64(void)
{
  uint64_t v = 0;
  ssize_t n;
  do n = getrandom(&v, sizeof v, 0);
  while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof v) v ^= rf__now_ns() * 0x9e3779b97f4a7c15ull; /* no entropy source: still unique */
  return v;
}

/* ---- SipHash-2-4 ---- */

static uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

#define SIPROUND                                                              \
  do {                                                                        \
    v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);                 \
    v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                    \
    v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                    \
    v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);                 \
  } while (0)

/* SipHash over the concatenation of up to two buffers */
static uint64_t siphash2(const rf__key *k, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
  uint64_t v0 = 0x736f6d6570736575ull ^ k->k0, v1 = 0x646f72616e646f6dull ^ k->k1;
  uint64_t v2 = 0x6c7967656e657261ull ^ k->k0, v3 = 0x7465646279746573ull ^ k->k1;
  size_t n = na + nb;
  uint8_t w[8];
  size_t fill = 0;
  for (size_t i = 0; i < n; i++) {
    w[fill++] = i < na ? a[i] : b[i - na];
    if (fill < 8) continue;
    uint64_t m;
    memcpy(&m, w, 8); /* little-endian hosts only, as the wire format */
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
    fill = 0;
  }
  uint64_t last = (uint64_t)(n & 0xff) << 56;
  for (size_t j = 0; j < fill; j++) last |= (uint64_t)w[j] << (8 * j);
  v3 ^= last;
  SIPROUND;
  SIPROUND;
  v0 ^= last;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t rf__mac(const rf__key *k, const void *data, size_t n) { return siphash2(k, data, n, NULL, 0); }

rf__key rf__token_key(uint64_t token) { return (rf__key){token, ~token ^ 0x5265666974546f6bull /* "RefitTok" */}; }

rf__key rf__session_key(const rf__key *token_key, uint64_t nonce_t, uint64_t nonce_r)
{
  uint64_t in[4] = {0x7373654b /* "Kess" */, nonce_t, nonce_r, 1};
  rf__key k;
  k.k0 = rf__mac(token_key, in, sizeof in);
  in[3] = 2;
  k.k1 = rf__mac(token_key, in, sizeof in);
  return k;
}

/* ---- control messages ---- */

const char *rf__msg_name(uint32_t type)
{
  static const char *const names[RF__MSG_TYPES] = {"?", "HELLO", "CHALLENGE", "AUTH", "WELCOME", "REJECT",
                                                   "BEGIN", "GRANT", "REFUSE", "DONE", "ACK"};
  return type < RF__MSG_TYPES ? names[type] : "?";
}

uint64_t rf__msg_mac(const rf__key *k, const rf__hdr *h, const void *payload)
{
  rf__hdr c = *h;
  c.mac = 0;
  return siphash2(k, (const uint8_t *)&c, sizeof c, payload, payload ? h->len : 0);
}
