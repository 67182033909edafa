/* refit nics: for each GPU, the NICs a transfer engine would use (refit_nic.h), with their PCIe
 * distance class, rate and state, then every other RDMA port and why it was not chosen.
 * Exit 0 when every GPU got an answer, 1 when sysfs could not be read or a choice failed (message
 * on stderr naming the file or NIC), 2 on bad arguments. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "refit_nic.h"

static void usage(FILE *f)
{
  fprintf(f, "usage: refit nics [--sysfs ROOT] [--mode auto|stripe|off|NAME[:PORT],...] [--min-gbps N] [--gpu BDF]\n"
             "  --sysfs ROOT    sysfs tree to read (default /sys)\n"
             "  --mode M        auto: closest NICs by PCIe distance (default); stripe: every usable NIC;\n"
             "                  off: leave the choice to UCX; or an explicit list like mlx5_0:1,mlx5_3:1\n"
             "  --min-gbps N    skip ports slower than N Gb/s (default 0: no minimum)\n"
             "  --gpu BDF       only this GPU (PCI address, e.g. 0000:1b:00.0); default every NVIDIA GPU\n");
}

static void print_nic(const char *what, const rf_nic *n)
{
  char port[80], rate[32];
  snprintf(port, sizeof port, "%s:%d", n->name, n->port);
  if (n->gbps > 0)
    snprintf(rate, sizeof rate, "%g Gb/s", n->gbps);
  else
    snprintf(rate, sizeof rate, "-");
  printf("  %-7s  %-10s %-10s %9s  %-6s  %-10s  %-12s  numa %d%s%s\n", what, port, rf_nic_class_name(n->cls), rate,
         n->state[0] ? n->state : "-", n->link_layer[0] ? n->link_layer : "-", n->pci[0] ? n->pci : "-", n->numa,
         n->why[0] ? "  " : "", n->why);
}

/* One selection, printed; returns 0 or 1. */
static int show(const char *root, const char *gpu, const char *mode, double min_gbps, rf_nic_result *r)
{
  int rc = rf_nic_select(root, gpu, mode, min_gbps, r);
  for (int i = 0; i < r->n_chosen; i++)
    print_nic("chosen", &r->chosen[i]);
  for (int i = 0; i < r->n_skipped; i++)
    print_nic("skipped", &r->skipped[i]);
  if (rc) {
    fflush(stdout); /* keep the message after the lines it explains when both go to one terminal */
    fprintf(stderr, "refit nics: %s%s%s%s\n", gpu ? "GPU " : "", gpu ? gpu : "", gpu ? ": " : "", r->error);
    return 1;
  }
  if (strcmp(mode, "off") == 0)
    printf("  mode off: UCX chooses its own devices (NET_DEVICES not set)\n");
  else if (r->n_chosen == 0)
    printf("  no RDMA devices under %s/class/infiniband: UCX uses what it finds (tcp, shared memory)\n", root);
  else {
    char nd[RF_NIC_MAX * 72];
    if (rf_nic_net_devices(r, nd, sizeof nd) < 0)
      snprintf(nd, sizeof nd, "(too long)");
    printf("  NET_DEVICES=%s", nd);
    if (r->n_chosen > 1)
      printf(" MAX_RMA_RAILS=%d MAX_RNDV_RAILS=%d", r->n_chosen, r->n_chosen);
    printf("\n");
  }
  return 0;
}

int rf_cmd_nics(int argc, char **argv)
{
  const char *root = "/sys", *mode = "auto", *gpu = NULL;
  double min_gbps = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc || (strcmp(a, "--sysfs") && strcmp(a, "--mode") && strcmp(a, "--min-gbps") && strcmp(a, "--gpu"))) {
      fprintf(stderr, "refit nics: %s '%s'\n", i + 1 >= argc && a[0] == '-' ? "missing value after" : "unknown argument", a);
      usage(stderr);
      return 2;
    }
    const char *v = argv[++i];
    if (strcmp(a, "--sysfs") == 0)
      root = v;
    else if (strcmp(a, "--mode") == 0)
      mode = v;
    else if (strcmp(a, "--gpu") == 0)
      gpu = v;
    else {
      char *end;
      min_gbps = strtod(v, &end);
      if (end == v || *end || !(min_gbps >= 0)) {
        fprintf(stderr, "refit nics: --min-gbps '%s' is not a rate in Gb/s\n", v);
        return 2;
      }
    }
  }

  /* a root that is not there reads as a machine without GPUs or NICs: say so instead */
  struct stat st;
  int bad_root = stat(root, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
  if (bad_root) {
    fprintf(stderr, "refit nics: --sysfs %s: %s\n", root, strerror(bad_root));
    return 1;
  }
  static rf_nic_result r; /* ~40 KiB */
  static char gpus[RF_NIC_MAX][32];
  char err[256];
  int n = 1;
  if (gpu)
    snprintf(gpus[0], sizeof gpus[0], "%s", gpu);
  else if ((n = rf_nic_list_gpus(root, gpus, RF_NIC_MAX, err, sizeof err)) < 0) {
    fprintf(stderr, "refit nics: %s\n", err);
    return 1;
  } else if (n > RF_NIC_MAX) {
    fprintf(stderr, "refit nics: %d GPUs under %s/bus/pci/devices, showing the first %d\n", n, root, RF_NIC_MAX);
    n = RF_NIC_MAX;
  }
  printf("sysfs %s, mode %s, minimum rate %g Gb/s\n", root, mode, min_gbps);
  int bad = 0;
  if (n == 0) {
    const char *m = strcmp(mode, "auto") == 0 ? "stripe" : mode;
    printf("no NVIDIA GPUs under %s/bus/pci/devices; NICs unranked (mode %s)\n", root, m);
    bad |= show(root, NULL, m, min_gbps, &r);
  }
  for (int g = 0; g < n; g++) {
    printf("GPU %s\n", gpus[g]);
    bad |= show(root, gpus[g], mode, min_gbps, &r);
  }
  return bad;
}
