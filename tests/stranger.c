/* stranger.c: a peer that does not know the token, for the tests that check what strangers cost a
 * receiver. It speaks UCX and refit's wire header directly (not through librefit).
 *   stranger idle PORT N MS         N endpoints to the listener that never say anything, held MS ms
 *   stranger flood PORT N           one endpoint, N well-formed control messages of random types
 *   stranger hello PORT RANK        a HELLO with a made-up MAC; prints the answer's bytes
 *   stranger done BLOB RANKS BYTES  through the blob's worker address: DONE for version 1..4 from each
 *                                   rank in RANKS (comma list) with BYTES bytes each, with made-up
 *                                   sessions and MACs
 *   stranger garbage PORT N         N raw TCP clients (no UCX) that each send 64 bytes: zeros, ones, random
 *   stranger replay BLOB TOKEN RANK MS
 *                                   through the blob's worker address: one HELLO of trainer RANK as a
 *                                   trainer with the token sends it (MAC, layout hash, receiver, this
 *                                   worker's address), captured once and sent again and again for MS
 *                                   ms (the token only makes the message a capture would hold; it
 *                                   never answers a CHALLENGE)
 * Prints one line "stranger: ..." and exits 0 when it could do what it was asked (a refusal by the
 * receiver is not a failure of the stranger). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ucp/api/ucp.h>

#include "internal.h"

static ucp_context_h ctx;
static ucp_worker_h worker;
static uint8_t answer[4096];
static size_t answer_len;
static int answers;

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static ucs_status_t on_msg(void *arg, const void *header, size_t hlen, void *data, size_t len,
                           const ucp_am_recv_param_t *param)
{
  (void)arg, (void)param;
  answers++;
  answer_len = hlen + len < sizeof answer ? hlen + len : sizeof answer;
  memcpy(answer, header, hlen < sizeof answer ? hlen : sizeof answer);
  if (hlen < sizeof answer) memcpy(answer + hlen, data, answer_len - hlen);
  return UCS_OK;
}

static void on_err(void *arg, ucp_ep_h ep, ucs_status_t st)
{
  (void)arg, (void)ep, (void)st;
}

static int init(void)
{
  ucp_config_t *cfg;
  if (ucp_config_read(NULL, NULL, &cfg) != UCS_OK) return -1;
  ucp_config_modify(cfg, "TLS", "tcp");
  ucp_params_t p = {.field_mask = UCP_PARAM_FIELD_FEATURES, .features = UCP_FEATURE_AM};
  ucs_status_t s = ucp_init(&p, cfg, &ctx);
  ucp_config_release(cfg);
  if (s != UCS_OK) return -1;
  ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE, .thread_mode = UCS_THREAD_MODE_SINGLE};
  if (ucp_worker_create(ctx, &wp, &worker) != UCS_OK) return -1;
  ucp_am_handler_param_t hp = {.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                                             UCP_AM_HANDLER_PARAM_FIELD_FLAGS,
                               .id = 17, .cb = on_msg, .flags = UCP_AM_FLAG_WHOLE_MSG};
  return ucp_worker_set_am_recv_handler(worker, &hp) == UCS_OK ? 0 : -1;
}

static void spin(uint64_t ms)
{
  uint64_t t0 = now_ms();
  while (now_ms() - t0 < ms) ucp_worker_progress(worker);
}

static ucp_ep_h connect_port(int port)
{
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  ucp_ep_params_t p = {.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                                     UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
                       .flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER,
                       .sockaddr = {.addr = (const struct sockaddr *)&sa, .addrlen = sizeof sa},
                       .err_mode = UCP_ERR_HANDLING_MODE_PEER, .err_handler = {.cb = on_err}};
  ucp_ep_h ep;
  return ucp_ep_create(worker, &p, &ep) == UCS_OK ? ep : NULL;
}

static void send_hdr(ucp_ep_h ep, const rf__hdr *h)
{
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS, .flags = UCP_AM_SEND_FLAG_REPLY};
  void *r = ucp_am_send_nbx(ep, 17, h, sizeof *h, NULL, 0, &p);
  if (UCS_PTR_IS_PTR(r)) {
    while (ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(worker);
    ucp_request_free(r);
  }
}

static uint64_t rnd(void) { return ((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 11) ^ (uint64_t)rand(); }

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: stranger idle|flood|hello|done|garbage ...\n");
    return 2;
  }
  srand((unsigned)getpid());
  const char *mode = argv[1];
  if (strcmp(mode, "garbage") == 0) {
    int port = atoi(argv[2]), n = argc > 3 ? atoi(argv[3]) : 1, sent = 0;
    for (int i = 0; i < n; i++) {
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
      inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
      if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        /* zeros, all ones and random bytes: UCX 1.13's listener aborts on 64 zero bytes */
        uint8_t junk[64];
        for (size_t k = 0; k < sizeof junk; k++) junk[k] = i % 3 == 0 ? 0 : i % 3 == 1 ? 0xff : (uint8_t)rand();
        if (write(fd, junk, sizeof junk) == (ssize_t)sizeof junk) sent++;
      }
      if (fd >= 0) close(fd);
    }
    printf("stranger: garbage to %d raw TCP clients\n", sent);
    return 0;
  }
  if (init()) {
    printf("stranger: UCX init failed\n");
    return 1;
  }
  if (strcmp(mode, "idle") == 0 && argc > 4) {
    int port = atoi(argv[2]), n = atoi(argv[3]), made = 0;
    for (int i = 0; i < n; i++) made += connect_port(port) != NULL;
    spin((uint64_t)atoi(argv[4]));
    printf("stranger: held %d idle connections\n", made);
    return 0;
  }
  if (strcmp(mode, "flood") == 0 && argc > 3) {
    ucp_ep_h ep = connect_port(atoi(argv[2]));
    if (!ep) return 1;
    int n = atoi(argv[3]);
    for (int i = 0; i < n; i++) {
      rf__hdr h = {.magic = RF__MAGIC, .type = (uint32_t)(1 + rand() % (RF__MSG_TYPES - 1)), .session = rnd(),
                   .version = (uint64_t)(rand() % 8), .value = rnd(), .rank = (uint32_t)(rand() % 4), .mac = rnd()};
      send_hdr(ep, &h);
      ucp_worker_progress(worker);
    }
    spin(200);
    printf("stranger: flooded %d messages\n", n);
    return 0;
  }
  if (strcmp(mode, "hello") == 0 && argc > 3) {
    ucp_ep_h ep = connect_port(atoi(argv[2]));
    if (!ep) return 1;
    rf__hdr h = {.magic = RF__MAGIC, .type = RF__HELLO, .session = rnd(), .nonce = rnd(), .hash = rnd(),
                 .rank = (uint32_t)atoi(argv[3]), .mac = rnd()};
    send_hdr(ep, &h);
    uint64_t t0 = now_ms();
    while (!answers && now_ms() - t0 < 3000) ucp_worker_progress(worker);
    printf("stranger: %d answer(s)", answers);
    if (answers) {
      rf__hdr a;
      memcpy(&a, answer, sizeof a);
      printf(", type %u, %zu bytes, version %llu value %llu hash %llu nonce %llu len %u mac %llu", a.type, answer_len,
             (unsigned long long)a.version, (unsigned long long)a.value, (unsigned long long)a.hash,
             (unsigned long long)a.nonce, a.len, (unsigned long long)a.mac);
    }
    printf("\n");
    return 0;
  }
  if (strcmp(mode, "replay") == 0 && argc > 5) {
    FILE *f = fopen(argv[2], "rb");
    if (!f) return 1;
    static uint8_t blob[1 << 20];
    size_t len = fread(blob, 1, sizeof blob, f);
    fclose(f);
    uint32_t alen, recv;
    uint64_t hash;
    if (len < 40) return 1;
    memcpy(&alen, blob + 24, 4); /* blob.c: layout hash at 8, receiver at 16, worker address at 32 */
    memcpy(&recv, blob + 16, 4);
    memcpy(&hash, blob + 8, 8);
    if (alen == 0 || 32 + (size_t)alen > len) return 1;
    ucp_ep_params_t p = {.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS, .address = (ucp_address_t *)(blob + 32)};
    ucp_ep_h ep;
    if (ucp_ep_create(worker, &p, &ep) != UCS_OK) return 1;
    ucp_address_t *mine;
    size_t mlen;
    if (ucp_worker_get_address(worker, &mine, &mlen) != UCS_OK) return 1;
    rf__key tk = rf__token_key(strtoull(argv[3], NULL, 0));
    static uint8_t msg[4096];
    rf__hdr h = {.magic = RF__MAGIC, .type = RF__HELLO, .session = rnd() | 1, .nonce = rnd(), .hash = hash,
                 .rank = (uint32_t)atoi(argv[4]), .recv = recv, .len = (uint32_t)mlen};
    h.mac = rf__msg_mac(&tk, &h, mine);
    memcpy(msg, &h, sizeof h);
    memcpy(msg + sizeof h, mine, mlen);
    uint64_t t0 = now_ms(), ms = strtoull(argv[5], NULL, 10);
    int sent = 0;
    rf__hdr first = {0};
    ucp_request_param_t rp = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS, .flags = UCP_AM_SEND_FLAG_REPLY};
    while (now_ms() - t0 < ms) {
      void *r = ucp_am_send_nbx(ep, 17, msg, sizeof h, msg + sizeof h, mlen, &rp);
      if (UCS_PTR_IS_PTR(r)) {
        while (ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(worker);
        ucp_request_free(r);
      }
      sent++;
      for (int k = 0; k < 4; k++) ucp_worker_progress(worker);
      if (answers && !first.magic) memcpy(&first, answer, sizeof first);
    }
    spin(300);
    printf("stranger: replayed one HELLO %d times, %d answer(s), first type %u\n", sent, answers, first.type);
    return 0;
  }
  if (strcmp(mode, "done") == 0 && argc > 4) {
    FILE *f = fopen(argv[2], "rb");
    if (!f) return 1;
    static uint8_t blob[1 << 20];
    size_t len = fread(blob, 1, sizeof blob, f);
    fclose(f);
    uint32_t alen;
    if (len < 40) return 1;
    memcpy(&alen, blob + 24, 4); /* the blob's worker address: offset 32, length at 24 (blob.c) */
    if (alen == 0 || 32 + (size_t)alen > len) return 1;
    ucp_ep_params_t p = {.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS, .address = (ucp_address_t *)(blob + 32)};
    ucp_ep_h ep;
    if (ucp_ep_create(worker, &p, &ep) != UCS_OK) return 1;
    uint32_t ranks[64], nr = 0;
    for (char *tok = strtok(argv[3], ","); tok && nr < 64; tok = strtok(NULL, ",")) ranks[nr++] = (uint32_t)atoi(tok);
    int sent = 0;
    for (uint64_t v = 1; v <= 4; v++)
      for (uint32_t k = 0; k < nr; k++) {
        rf__hdr h = {.magic = RF__MAGIC, .type = RF__DONE, .session = rnd(), .version = v,
                     .value = strtoull(argv[4], NULL, 10), .rank = ranks[k], .mac = rnd()};
        send_hdr(ep, &h);
        sent++;
      }
    spin(300);
    printf("stranger: sent %d forged DONE messages\n", sent);
    return 0;
  }
  fprintf(stderr, "stranger: bad arguments\n");
  return 2;
}
