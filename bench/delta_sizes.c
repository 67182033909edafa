/* delta_sizes.c: patch size over dense size of the delta format (delta.h, encoded by the C
 * reference) against single-mode encodings of the same changes, per element size and density of
 * uniformly random changes (kernels/NOTES.md "Delta patch encoding"). Columns, all with the
 * format's 32-byte header:
 *   u32idx   u32 element index + value per change (no chunks)
 *   bitmap   one bit per element of the region + the changed values
 *   list     u16 index within a 16 KB chunk + value, 12-byte entry per changed chunk (mode LIST only)
 *   tiles    counts per 256-element tile + u8 index + value, same entries (mode TILES only)
 *   ours     the format: per chunk the smallest of LIST, TILES, BITMAP, DENSE
 *   entropy  log2 C(N, k) bits for the positions + the values: no encoding does better
 * Run: ninja build/delta_sizes && ./build/delta_sizes [MiB per region, default 8] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delta.h"
#include "kernels.h"

static uint64_t rng_state = 12345;
static uint32_t rnd(void)
{
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}

int main(int argc, char **argv)
{
  const uint64_t n = (uint64_t)(argc > 1 ? atoi(argv[1]) : 8) << 20;
  static const double dens[] = {1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3};
  uint8_t *old = malloc(n), *next = malloc(n), *patch = malloc(rfk_delta_bound(n));
  printf("delta_sizes: %llu MiB regions, uniformly random changes; patch bytes / dense bytes in %%\n\n",
         (unsigned long long)(n >> 20));
  printf("| esize | density | u32idx | bitmap | list | tiles | ours | entropy | ours/entropy |\n");
  printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int e = 1; e <= 4; e *= 2)
    for (size_t di = 0; di < sizeof dens / sizeof *dens; di++) {
      const uint64_t N = n / e, per = RFK_DELTA_CHUNK / e;
      for (uint64_t i = 0; i < n; i++)
        old[i] = (uint8_t)rnd();
      memcpy(next, old, n);
      uint64_t k = 0, list = 0, tiles = 0, m = 0, thresh = (uint64_t)(dens[di] * 2147483648.0) /* rnd() has 31 bits */;
      for (uint64_t c0 = 0; c0 < N; c0 += per) {
        uint64_t kc = 0, el = N - c0 < per ? N - c0 : per;
        for (uint64_t i = c0; i < c0 + el; i++)
          if (rnd() < thresh) {
            next[i * e] ^= 1; /* any change of the element's bytes */
            kc++;
          }
        k += kc, m += kc > 0;
        list += kc * (2 + e), tiles += kc ? (el + 255) / 256 + kc * (1 + e) : 0;
      }
      rfk_delta_region g = {next, old, n, e, patch, rfk_delta_bound(n)};
      rfk_delta_out o;
      if (rfk_ref_delta_encode(&g, 1, &o) != RFK_OK || o.changed != k) {
        printf("encode failed\n");
        return 1;
      }
      double d = (double)n, ent = (lgamma(N + 1.0) - lgamma(k + 1.0) - lgamma(N - k + 1.0)) / log(2.0) / 8 + (double)k * e;
      printf("| %d | %.2f%% | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f |\n", e, 100 * dens[di],
             100 * (32.0 + k * (4.0 + e)) / d, 100 * (32.0 + N / 8.0 + (double)k * e) / d,
             100 * (32.0 + list + 12.0 * m) / d, 100 * (32.0 + tiles + 12.0 * m) / d, 100 * o.size / d, 100 * (32 + ent) / d,
             o.size / (32 + ent));
    }
  free(old), free(next), free(patch);
  return 0;
}
