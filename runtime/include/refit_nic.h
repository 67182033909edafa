/* refit_nic.h: NIC discovery and selection from a sysfs tree (DESIGN.md section 5).
 *
 * Topology comes from sysfs only (no UCX, no libibverbs): RDMA ports from
 * <root>/class/infiniband/<dev>/ports/<n>/{state,rate,link_layer}, PCI placement from the
 * <dev>/device link and <root>/bus/pci/devices/<bdf> links into <root>/devices/pciDDDD:BB/...
 * Every link is resolved inside the root: a link that leaves it is an error, so fixtures are plain
 * directories with relative links. Nothing here allocates or prints; results live in caller memory. */
#ifndef REFIT_NIC_H
#define REFIT_NIC_H

#include <stddef.h>

#define RF_NIC_MAX 64 /* RDMA ports (device, port) per node */

/* PCIe distance from the GPU, closest first. UNRANKED: no GPU given (stripe, list). */
typedef enum rf_nic_class {
  RF_NIC_UNRANKED = 0,
  RF_NIC_SWITCH = 1,     /* a PCIe switch below the root port is a common ancestor */
  RF_NIC_HOSTBRIDGE = 2, /* same pciDDDD:BB root complex, different switch or root port */
  RF_NIC_NUMA = 3,       /* different host bridge, same numa_node */
  RF_NIC_OTHER = 4       /* across the CPU interconnect, or placement unknown */
} rf_nic_class;

typedef struct rf_nic {
  char name[64];       /* RDMA device, "mlx5_0" */
  int port;            /* 1-based port number */
  double gbps;         /* from ports/<n>/rate, Gb/s; 0 when unread */
  char state[32];      /* "ACTIVE", "DOWN", "INIT", ... */
  int numa;            /* numa_node of the PCI function; -1 unknown */
  char pci[32];        /* PCI function, "0000:19:00.0"; empty when not a PCI device */
  rf_nic_class cls;    /* distance from the GPU */
  char why[128];       /* skip reason, empty when chosen */
  char link_layer[16]; /* "InfiniBand", "Ethernet"; empty when the file is absent */
} rf_nic;

typedef struct rf_nic_result {
  int n_chosen, n_skipped;
  rf_nic chosen[RF_NIC_MAX], skipped[RF_NIC_MAX];
  char error[256]; /* set when a call returns -1 */
} rf_nic_result;

/* Chooses the NICs for one GPU.
 * sysfs_root: NULL = "/sys". gpu_bdf: "0000:1b:00.0"; required for auto, optional for stripe,
 * list and off (then classes are RF_NIC_UNRANKED and stripe orders by name).
 * mode: "auto"   every usable NIC of the closest class present (ties keep all);
 *       "stripe" every usable NIC, closest class first, then by name;
 *       "off"    n_chosen = n_skipped = 0, sysfs is not read (UCX chooses);
 *       "name[:port][,name[:port]...]" exactly these, in this order; a name without a port means
 *       its ACTIVE ports. Unknown, not ACTIVE, unreadable or too slow entries are errors.
 * min_gbps: ports slower than this are skipped (0 = no filter).
 * Usable: files readable, port ACTIVE, rate >= min_gbps, and a PCI function behind the device (one
 * without, like soft RoCE rxe0, only when named in a list). Every port not chosen is in skipped[]
 * with its reason, in selection order (class, then name). A node without class/infiniband returns 0 with nothing chosen;
 * RDMA ports present but none usable is an error (-1) in auto and stripe, skipped[] still filled.
 * Malformed or cut-short files, and links that leave the root or loop, are errors naming the file;
 * a file that cannot be opened or read only makes its port unusable (the reason names it).
 * A failed call has n_chosen = 0. Costs about 1 ms on an 8-NIC tree (ninja bench_nic); allocates
 * ~100 KiB internally for the call's duration.
 * Returns 0, or -1 with out->error naming the file, NIC or argument at fault. */
int rf_nic_select(const char *sysfs_root, const char *gpu_bdf, const char *mode, double min_gbps,
                  rf_nic_result *out);

/* UCX NET_DEVICES value for r->chosen, "mlx5_0:1,mlx5_3:1" ("" when none). Returns the number of
 * chars written (without the NUL), or -1 when len is too small (buf then holds ""). */
int rf_nic_net_devices(const rf_nic_result *r, char *buf, size_t len);

/* NVIDIA GPUs (vendor 0x10de, class 0x030000 or 0x030200) under <root>/bus/pci/devices, sorted by
 * address. Writes min(count, max) addresses and returns count (like snprintf: a count above max
 * means the array was too small), or -1 with err naming the file. */
int rf_nic_list_gpus(const char *sysfs_root, char (*bdf)[32], int max, char *err, size_t errlen);

/* "switch", "hostbridge", "numa", "other", "unranked" */
const char *rf_nic_class_name(rf_nic_class cls);

#endif
