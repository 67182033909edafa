/* test_nic.c: NIC discovery and selection on the sysfs fixtures of tests/fixtures/mksysfs.sh:
 * exact choices, classes, rates, skip reasons, NET_DEVICES strings and error texts.
 * Run from the repository root (fixture paths are relative to it).
 * `test_nic --bench` (build/bench_nic, -O2, no sanitizers) times selection on the 8-GPU fixture. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "refit_nic.h"

static int passed, failed;

static void check(int ok, const char *what, int line)
{
  if (ok)
    passed++;
  else {
    failed++;
    printf("FAIL test_nic.c:%d: %s\n", line, what);
  }
}
static void check_str(const char *got, const char *want, const char *what, int line)
{
  if (strcmp(got, want) == 0)
    passed++;
  else {
    failed++;
    printf("FAIL test_nic.c:%d: %s\n  got  '%s'\n  want '%s'\n", line, what, got, want);
  }
}
static void check_int(long got, long want, const char *what, int line)
{
  if (got == want)
    passed++;
  else {
    failed++;
    printf("FAIL test_nic.c:%d: %s: got %ld, want %ld\n", line, what, got, want);
  }
}
#define CHECK(c) check((c), #c, __LINE__)
#define EQS(a, b) check_str((a), (b), #a, __LINE__)
#define EQI(a, b) check_int((long)(a), (long)(b), #a, __LINE__)

#define FIX "tests/fixtures/sysfs/"

static rf_nic_result r; /* ~40 KiB, reused by every test */

/* "name:port class" of each chosen (or skipped) NIC, joined by spaces. */
static const char *list(const rf_nic *n, int count)
{
  static char buf[4096];
  size_t off = 0;
  buf[0] = 0;
  for (int i = 0; i < count && off < sizeof buf; i++)
    off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s:%d %s", i ? " " : "", n[i].name, n[i].port,
                            rf_nic_class_name(n[i].cls));
  return buf;
}
static const char *netdev(void)
{
  static char buf[1024];
  if (rf_nic_net_devices(&r, buf, sizeof buf) < 0)
    return "(error)";
  return buf;
}

static void test_list_gpus(void)
{
  char bdf[16][32], err[256];
  EQI(rf_nic_list_gpus(FIX "dgx8", bdf, 16, err, sizeof err), 8); /* NVSwitch, NVMe and bridges left out */
  EQS(err, "");
  EQS(bdf[0], "0000:18:00.0");
  EQS(bdf[1], "0000:1d:00.0");
  EQS(bdf[5], "0000:9e:00.0");
  EQS(bdf[7], "0000:be:00.0");
  EQI(rf_nic_list_gpus(FIX "dgx8", bdf, 3, err, sizeof err), 8); /* like snprintf: the smallest 3 */
  EQS(bdf[0], "0000:18:00.0");
  EQS(bdf[2], "0000:3a:00.0");
  EQI(rf_nic_list_gpus(FIX "dgx8", NULL, 0, err, sizeof err), 8);
  EQI(rf_nic_list_gpus(FIX "numa4", bdf, 16, err, sizeof err), 4); /* class 0x030200 and 0x030000 */
  EQS(bdf[2], "0000:81:00.0");
  EQS(bdf[3], "0000:a1:00.0");
  EQI(rf_nic_list_gpus(FIX "nordma", bdf, 16, err, sizeof err), 2);
  EQI(rf_nic_list_gpus(FIX "no_such_root", bdf, 16, err, sizeof err), 0);
  EQI(rf_nic_list_gpus(FIX "trunc_class", bdf, 16, err, sizeof err), -1);
  EQS(err, FIX "trunc_class/bus/pci/devices/0000:03:00.0/class: truncated: '0x03' has no end of line");
}

static void test_dgx8_auto(void)
{
  /* GPU 18:00.0 shares its switch with mlx5_0 and mlx5_1: both, nothing else */
  EQI(rf_nic_select(FIX "dgx8", "0000:18:00.0", "auto", 0, &r), 0);
  EQS(r.error, "");
  EQS(list(r.chosen, r.n_chosen), "mlx5_0:1 switch mlx5_1:1 switch");
  EQS(netdev(), "mlx5_0:1,mlx5_1:1");
  EQS(r.chosen[0].pci, "0000:19:00.0");
  EQS(r.chosen[1].pci, "0000:1a:00.0");
  EQS(r.chosen[0].state, "ACTIVE");
  EQS(r.chosen[0].link_layer, "InfiniBand");
  CHECK(r.chosen[0].gbps == 400);
  EQI(r.chosen[0].numa, 0);
  EQS(r.chosen[0].why, "");
  EQS(list(r.skipped, r.n_skipped),
      "mlx5_2:1 numa mlx5_3:1 numa mlx5_4:1 other mlx5_5:1 other mlx5_6:1 other mlx5_7:1 other");
  EQS(r.skipped[0].why, "farther (numa) than the chosen (switch)");
  EQS(r.skipped[3].why, "state DOWN, not ACTIVE");
  EQS(r.skipped[3].state, "DOWN");
  CHECK(r.skipped[3].gbps == 10);
  EQI(r.skipped[3].numa, 1);
  EQS(r.skipped[4].why, "farther (other) than the chosen (switch)");

  /* GPU 1d:00.0: no NIC on its switch; the two on its host bridge */
  EQI(rf_nic_select(FIX "dgx8", "0000:1d:00.0", "auto", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_0:1 hostbridge mlx5_1:1 hostbridge");
  EQI(r.n_skipped, 6);

  /* GPU 3a:00.0: its own switch NIC only; the short address form works */
  EQI(rf_nic_select(FIX "dgx8", "3a:00.0", "auto", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_2:1 switch");
  EQS(list(r.skipped, 2), "mlx5_3:1 hostbridge mlx5_0:1 numa");

  /* GPU 9e:00.0: its switch NIC mlx5_5 is DOWN, so the host bridge's mlx5_4 */
  EQI(rf_nic_select(FIX "dgx8", "0000:9e:00.0", "auto", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_4:1 hostbridge");
  EQS(netdev(), "mlx5_4:1");
  EQS(list(r.skipped, 2), "mlx5_5:1 switch mlx5_6:1 numa");
  EQS(r.skipped[0].why, "state DOWN, not ACTIVE");
  EQS(r.skipped[1].why, "farther (numa) than the chosen (hostbridge)");
  EQI(r.n_skipped, 7);

  /* a trailing '/' on the root changes nothing */
  EQI(rf_nic_select(FIX "dgx8/", "0000:be:00.0", "auto", 0, &r), 0);
  EQS(netdev(), "mlx5_7:1");
}

static void test_dgx8_stripe_list_off(void)
{
  EQI(rf_nic_select(FIX "dgx8", "0000:18:00.0", "stripe", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_0:1 switch mlx5_1:1 switch mlx5_2:1 numa mlx5_3:1 numa mlx5_4:1 other "
                                  "mlx5_6:1 other mlx5_7:1 other");
  EQS(netdev(), "mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_4:1,mlx5_6:1,mlx5_7:1");
  EQS(list(r.skipped, r.n_skipped), "mlx5_5:1 other");
  EQS(r.skipped[0].why, "state DOWN, not ACTIVE");

  /* no GPU: by name, unranked */
  EQI(rf_nic_select(FIX "dgx8", NULL, "stripe", 0, &r), 0);
  EQS(netdev(), "mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_4:1,mlx5_6:1,mlx5_7:1");
  EQI(r.chosen[6].cls, RF_NIC_UNRANKED);

  /* explicit list: in the order given, with classes; the rest are skipped */
  EQI(rf_nic_select(FIX "dgx8", "0000:18:00.0", "mlx5_3,mlx5_0:1", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_3:1 numa mlx5_0:1 switch");
  EQS(netdev(), "mlx5_3:1,mlx5_0:1");
  EQI(r.n_skipped, 6);
  EQS(r.skipped[0].name, "mlx5_1");
  EQS(r.skipped[0].why, "not in the list");
  EQS(r.skipped[3].name, "mlx5_5");
  EQS(r.skipped[3].why, "state DOWN, not ACTIVE");
  EQI(rf_nic_select(FIX "dgx8", NULL, "mlx5_7", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_7:1 unranked");

  static const struct {
    const char *mode, *error;
  } bad[] = {
    {"mlx5_5", "mlx5_5: no usable port (state DOWN, not ACTIVE)"},
    {"mlx5_0,mlx5_5:1", "mlx5_5:1: state DOWN, not ACTIVE"},
    {"mlx5_9", "mlx5_9: no such RDMA device under " FIX "dgx8/class/infiniband"},
    {"mlx5_0:2", "mlx5_0:2: no such port"},
    {"mlx5_0,mlx5_1,mlx5_0:1", "mlx5_0:1: listed twice in 'mlx5_0,mlx5_1,mlx5_0:1'"},
    {"mlx5_0,", "NIC list 'mlx5_0,': empty entry"},
    {"mlx5_0:x", "NIC list 'mlx5_0:x': bad port in 'mlx5_0:x' (want name[:port])"},
    {"mlx5_0:0", "NIC list 'mlx5_0:0': bad port in 'mlx5_0:0' (want name[:port])"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    EQI(rf_nic_select(FIX "dgx8", "0000:18:00.0", bad[i].mode, 0, &r), -1);
    EQS(r.error, bad[i].error);
    EQI(r.n_chosen, 0);
  }

  /* off reads nothing, so it cannot fail on the root */
  EQI(rf_nic_select(FIX "no_such_root", NULL, "off", 0, &r), 0);
  EQI(r.n_chosen + r.n_skipped, 0);
  EQS(netdev(), "");
  EQI(rf_nic_select(FIX "escape_link", "0000:03:00.0", "off", 0, &r), 0);
}

static void test_arguments(void)
{
  EQI(rf_nic_select(FIX "dgx8", NULL, "auto", 0, &r), -1);
  EQS(r.error, "mode auto needs a GPU PCI address");
  EQI(rf_nic_select(FIX "dgx8", "0000:1b:00", "auto", 0, &r), -1);
  EQS(r.error, "GPU address '0000:1b:00' is not a PCI address like 0000:1b:00.0");
  EQI(rf_nic_select(FIX "dgx8", "0000:77:00.0", "auto", 0, &r), -1);
  EQS(r.error, FIX "dgx8/bus/pci/devices/0000:77:00.0: no such PCI device (GPU 0000:77:00.0)");
  EQI(rf_nic_select(FIX "dgx8", "10000:18:00.0", "auto", 0, &r), -1); /* a VMD domain is an address */
  EQS(r.error, FIX "dgx8/bus/pci/devices/10000:18:00.0: no such PCI device (GPU 10000:18:00.0)");
  EQI(rf_nic_select(FIX "dgx8", "0000:18:00.8", "auto", 0, &r), -1);
  EQS(r.error, "GPU address '0000:18:00.8' is not a PCI address like 0000:1b:00.0");
  EQI(rf_nic_select(FIX "dgx8", "0000:18:00.0", "", 0, &r), -1);
  EQS(r.error, "no NIC mode (want auto, stripe, off or name[:port],...)");
  EQI(rf_nic_select(FIX "dgx8", "0000:18:00.0", "auto", -1, &r), -1);
  EQS(r.error, "minimum rate -1 Gb/s is not a rate");
  EQI(rf_nic_select(FIX "dgx8", "0000:18:00.0", "auto", NAN, &r), -1);
  EQI(rf_nic_select(FIX "dgx8", "0000:18:00.0", "auto", 0, NULL), -1);

  char buf[32];
  EQI(rf_nic_select(FIX "dgx8", "0000:18:00.0", "auto", 0, &r), 0);
  EQI(rf_nic_net_devices(&r, buf, 18), 17); /* "mlx5_0:1,mlx5_1:1" and its NUL */
  EQS(buf, "mlx5_0:1,mlx5_1:1");
  EQI(rf_nic_net_devices(&r, buf, 17), -1);
  EQS(buf, "");
  EQI(rf_nic_net_devices(&r, buf, 0), -1);
}

static void test_numa4(void)
{
  /* every NIC on its own host bridge: the NUMA node decides */
  EQI(rf_nic_select(FIX "numa4", "0000:01:00.0", "auto", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_0:1 numa mlx5_1:1 numa");
  EQS(r.chosen[1].link_layer, "Ethernet");
  CHECK(r.chosen[1].gbps == 200);
  EQS(list(r.skipped, r.n_skipped), "mlx5_2:1 other mlx5_3:1 other mlx5_3:2 other");
  EQS(r.skipped[2].why, "state INIT, not ACTIVE");

  EQI(rf_nic_select(FIX "numa4", "0000:81:00.0", "auto", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_2:1 numa mlx5_3:1 numa");
  EQS(netdev(), "mlx5_2:1,mlx5_3:1");
  EQS(list(r.skipped, r.n_skipped), "mlx5_3:2 numa mlx5_0:1 other mlx5_1:1 other");
  EQS(r.skipped[0].why, "state INIT, not ACTIVE");
  EQS(r.skipped[1].why, "farther (other) than the chosen (numa)");

  EQI(rf_nic_select(FIX "numa4", "0000:a1:00.0", "stripe", 0, &r), 0);
  EQS(netdev(), "mlx5_2:1,mlx5_3:1,mlx5_0:1,mlx5_1:1");

  /* the rate filter drops the 200 Gb/s RoCE port */
  EQI(rf_nic_select(FIX "numa4", "0000:21:00.0", "auto", 300, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_0:1 numa");
  EQS(r.skipped[0].name, "mlx5_1");
  EQS(r.skipped[0].why, "rate 200 Gb/s below the minimum 300 Gb/s");

  /* a name without a port takes its ACTIVE ports only */
  EQI(rf_nic_select(FIX "numa4", NULL, "mlx5_3", 0, &r), 0);
  EQS(netdev(), "mlx5_3:1");
  EQI(rf_nic_select(FIX "numa4", NULL, "mlx5_3:2", 0, &r), -1);
  EQS(r.error, "mlx5_3:2: state INIT, not ACTIVE");
}

static void test_slowside(void)
{
  /* without a minimum the 25 Gb/s side port shares the GPU's switch and is chosen */
  EQI(rf_nic_select(FIX "slowside", "0000:03:00.0", "auto", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_0:1 switch mlx5_2:1 switch");
  EQS(list(r.skipped, r.n_skipped), "mlx5_1:1 hostbridge rxe0:1 other");
  EQS(r.skipped[1].why, "not a PCI device (class/infiniband/rxe0/device)");
  EQS(r.skipped[1].pci, "");

  EQI(rf_nic_select(FIX "slowside", "0000:03:00.0", "auto", 100, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "mlx5_0:1 switch");
  EQS(netdev(), "mlx5_0:1");
  EQS(list(r.skipped, r.n_skipped), "mlx5_2:1 switch mlx5_1:1 hostbridge rxe0:1 other");
  EQS(r.skipped[0].why, "rate 25 Gb/s below the minimum 100 Gb/s");
  EQS(r.skipped[0].link_layer, "Ethernet");
  EQS(r.skipped[2].why, "rate 10 Gb/s below the minimum 100 Gb/s"); /* rxe0: the rate speaks first */

  EQI(rf_nic_select(FIX "slowside", "0000:08:00.0", "stripe", 100, &r), 0);
  EQS(netdev(), "mlx5_1:1,mlx5_0:1");

  /* nothing fast enough: an error, and every reason still there */
  EQI(rf_nic_select(FIX "slowside", "0000:03:00.0", "auto", 1000, &r), -1);
  EQS(r.error, "no usable RDMA port among 4 (first: mlx5_0:1 rate 400 Gb/s below the minimum 1000 Gb/s)");
  EQI(r.n_chosen, 0);
  EQI(r.n_skipped, 4);
  EQS(r.skipped[3].why, "rate 10 Gb/s below the minimum 1000 Gb/s");

  /* soft RoCE is never picked by auto or stripe, but may be named */
  EQI(rf_nic_select(FIX "slowside", "0000:03:00.0", "rxe0,mlx5_2", 0, &r), 0);
  EQS(list(r.chosen, r.n_chosen), "rxe0:1 other mlx5_2:1 switch");
  EQS(r.chosen[0].why, "");
  EQS(r.skipped[1].name, "mlx5_1");
  EQS(r.skipped[1].why, "not in the list");
  EQI(rf_nic_select(FIX "slowside", NULL, "stripe", 0, &r), 0);
  EQS(netdev(), "mlx5_0:1,mlx5_1:1,mlx5_2:1");
}

static void test_nordma(void)
{
  EQI(rf_nic_select(FIX "nordma", "0000:01:00.0", "auto", 0, &r), 0);
  EQI(r.n_chosen, 0);
  EQI(r.n_skipped, 0);
  EQS(r.error, "");
  char buf[8] = "x";
  EQI(rf_nic_net_devices(&r, buf, sizeof buf), 0);
  EQS(buf, "");
  EQI(rf_nic_select(FIX "nordma", NULL, "stripe", 0, &r), 0);
  EQI(r.n_chosen, 0);
  EQI(rf_nic_select(FIX "nordma", NULL, "mlx5_0:1", 0, &r), -1);
  EQS(r.error, "mlx5_0: no such RDMA device (no RDMA devices under " FIX "nordma/class/infiniband)");
}

static void test_broken(void)
{
  static const struct {
    const char *fixture, *error;
  } bad[] = {
    {"bad_state", "bad_state/class/infiniband/mlx5_0/ports/1/state: malformed port state 'ACTIVE' "
                  "(want 'N: NAME', e.g. '4: ACTIVE')"},
    {"trunc_state", "trunc_state/class/infiniband/mlx5_0/ports/1/state: empty file (truncated?)"},
    {"bad_rate", "bad_rate/class/infiniband/mlx5_0/ports/1/rate: malformed rate 'fast Gb/sec' (want 'N Gb/sec (...)')"},
    {"trunc_rate", "trunc_rate/class/infiniband/mlx5_0/ports/1/rate: truncated: '400 Gb/' has no end of line"},
    {"bad_numa", "bad_numa/class/infiniband/mlx5_0/device/numa_node: malformed numa_node 'zero' "
                 "(want -1 or a node number)"},
    {"escape_link", "escape_link/class/infiniband/mlx5_0/device: link leads outside the sysfs root"},
    {"loop_link", "loop_link/class/infiniband/mlx5_0/device: too many levels of links"},
    {"bad_port", "bad_port/class/infiniband/mlx5_0/ports: malformed port directory 'one' (want a port number)"},
    {"nostate", "no usable RDMA port among 1 (first: mlx5_0:1 cannot read class/infiniband/mlx5_0/ports/1/state: "
                "No such file or directory)"},
  };
  static const char *const modes[] = {"auto", "stripe", "mlx5_0"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    for (size_t m = 0; m < 3; m++) {
      char root[128], want[512];
      snprintf(root, sizeof root, FIX "%s", bad[i].fixture);
      snprintf(want, sizeof want, "%s%s", strncmp(bad[i].error, bad[i].fixture, strlen(bad[i].fixture)) ? "" : FIX, bad[i].error);
      if (strcmp(bad[i].fixture, "nostate") == 0 && m == 2)
        snprintf(want, sizeof want, "mlx5_0: no usable port (cannot read class/infiniband/mlx5_0/ports/1/state: "
                                    "No such file or directory)");
      EQI(rf_nic_select(root, "0000:03:00.0", modes[m], 0, &r), -1);
      EQS(r.error, want);
    }
  EQI(rf_nic_select(FIX "nostate", "0000:03:00.0", "auto", 0, &r), -1);
  EQS(r.skipped[0].why, "cannot read class/infiniband/mlx5_0/ports/1/state: No such file or directory");
  /* the GPU's class is not read by selection */
  EQI(rf_nic_select(FIX "trunc_class", "0000:03:00.0", "auto", 0, &r), 0);
  EQS(netdev(), "mlx5_0:1");
}

/* An absolute root behaves as a relative one; the real /sys never crashes and always explains. */
static void test_roots(void)
{
  char *abs = realpath(FIX "dgx8", NULL);
  CHECK(abs != NULL);
  if (abs) {
    EQI(rf_nic_select(abs, "0000:18:00.0", "auto", 0, &r), 0);
    EQS(netdev(), "mlx5_0:1,mlx5_1:1");
    free(abs);
  }
  char bdf[RF_NIC_MAX][32], err[256] = "x";
  int n = rf_nic_list_gpus(NULL, bdf, RF_NIC_MAX, err, sizeof err);
  CHECK((n >= 0 && err[0] == 0) || (n == -1 && err[0] != 0));
  int rc = rf_nic_select(NULL, NULL, "stripe", 0, &r);
  CHECK((rc == 0 && r.error[0] == 0) || (rc == -1 && r.error[0] != 0));
  printf("real /sys: %d GPUs, stripe -> %d chosen, %d skipped%s%s\n", n, r.n_chosen, r.n_skipped,
         rc ? ": " : "", r.error);
}

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Microseconds per call on dgx8 (8 GPUs, 8 NICs): what an engine pays once at startup. */
static int bench(void)
{
  static const char *const modes[] = {"auto", "stripe", "mlx5_3,mlx5_0:1"};
  char bdf[RF_NIC_MAX][32], err[256];
  int iters = 2000;
  double t0 = now_s();
  for (int i = 0; i < iters; i++)
    if (rf_nic_list_gpus(FIX "dgx8", bdf, RF_NIC_MAX, err, sizeof err) != 8)
      return printf("bench: list_gpus failed: %s\n", err), 1;
  printf("bench_nic: rf_nic_list_gpus dgx8 (8 GPUs among 52 PCI functions): %.1f us/call\n", (now_s() - t0) / iters * 1e6);
  for (int m = 0; m < 3; m++) {
    t0 = now_s();
    for (int i = 0; i < iters; i++)
      if (rf_nic_select(FIX "dgx8", "0000:18:00.0", modes[m], 0, &r) != 0)
        return printf("bench: select failed: %s\n", r.error), 1;
    printf("bench_nic: rf_nic_select dgx8 GPU 18:00.0 mode %s (8 NICs): %.1f us/call\n", modes[m],
           (now_s() - t0) / iters * 1e6);
  }
  return 0;
}

int main(int argc, char **argv)
{
  if (argc > 1 && strcmp(argv[1], "--bench") == 0)
    return bench();
  test_list_gpus();
  test_dgx8_auto();
  test_dgx8_stripe_list_off();
  test_arguments();
  test_numa4();
  test_slowside();
  test_nordma();
  test_broken();
  test_roots();
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
