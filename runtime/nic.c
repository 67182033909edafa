/* nic.c: NIC discovery and selection from a sysfs tree (refit_nic.h, DESIGN.md section 5).
 *
 * Paths are handled relative to the sysfs root and every link is resolved by hand, one component at
 * a time, so that a fixture (plain directories, relative links) behaves like /sys and nothing ever
 * leads outside the root. sysfs attributes are one line ending in '\n': a file without it was cut
 * short, an empty one too, and both are errors naming the file, as is any content that does not
 * parse. A file that cannot be opened or read (missing, EINVAL from a driver) only makes its port
 * unusable, with the reason kept for logs. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refit_nic.h"

#define RF__PATH 1024 /* bytes of a path relative to the root */
#define RF__ATTR 256  /* bytes of a sysfs attribute we read */
#define RF__HOPS 40   /* links followed per resolution, as the kernel's limit */

typedef struct rf__ctx {
  char root[RF__PATH]; /* without trailing '/'; "" for "/" */
  const char *shown;   /* root as the caller wrote it, for messages */
  char *err;
  size_t errlen;
} rf__ctx;

/* One RDMA port during selection. */
typedef struct rf__port {
  rf_nic nic;
  int usable;
  int soft; /* usable but for not being a PCI function (soft RoCE): allowed when named in a list */
  int dev;  /* index into the device table */
} rf__port;

typedef struct rf__dev {
  char name[64];
  char path[RF__PATH]; /* resolved PCI function directory, relative to the root; "" when not PCI */
  int numa;
} rf__dev;

typedef struct rf__topo {
  rf__dev dev[RF_NIC_MAX];
  rf__port port[RF_NIC_MAX];
  int n_dev, n_port;
  int have_ib; /* class/infiniband exists */
} rf__topo;

__attribute__((format(printf, 3, 4))) static int rf__fail(rf__ctx *c, const char *rel, const char *fmt, ...)
{
  if (!c->err || c->errlen == 0)
    return -1;
  size_t off = 0;
  if (rel) {
    int n = snprintf(c->err, c->errlen, "%s/%s: ", c->shown, rel);
    off = n < 0 ? 0 : (size_t)n < c->errlen ? (size_t)n : c->errlen - 1;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err + off, c->errlen - off, fmt, ap);
  va_end(ap);
  return -1;
}

/* snprintf into a fixed field; names are bounded (64 bytes) so paths built here fit, and text that
 * does not fit is cut, never overrun. */
__attribute__((format(printf, 3, 4))) static void rf__fmt(char *dst, size_t len, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(dst, len, fmt, ap);
  va_end(ap);
}

static void rf__ctx_init(rf__ctx *c, const char *root, char *err, size_t errlen)
{
  c->shown = root ? root : "/sys";
  size_t n = strlen(c->shown);
  while (n > 0 && c->shown[n - 1] == '/')
    n--;
  if (n >= sizeof c->root)
    n = sizeof c->root - 1; /* rf__resolve then fails on the missing path, naming it */
  memcpy(c->root, c->shown, n);
  c->root[n] = 0;
  c->err = err;
  c->errlen = errlen;
  if (err && errlen)
    err[0] = 0;
}

/* Joins root and a relative path into full; ENAMETOOLONG when it does not fit. */
static int rf__full(const rf__ctx *c, const char *rel, char *full, size_t len)
{
  int n = snprintf(full, len, "%s/%s", c->root, rel);
  return n < 0 || (size_t)n >= len ? ENAMETOOLONG : 0;
}

/* Resolves rel (relative to the root) into out (relative, no links, "" = the root itself).
 * Returns 0, ENOENT or another lstat/readlink errno, ELOOP (more than RF__HOPS links), EXDEV (a
 * link or ".." leaves the root), ENAMETOOLONG. */
static int rf__resolve(const rf__ctx *c, const char *rel, char *out, size_t outlen)
{
  char todo[2 * RF__PATH], next[2 * RF__PATH], full[2 * RF__PATH], link[RF__PATH];
  size_t olen = 0;
  int hops = 0;
  if (outlen == 0 || strlen(rel) >= sizeof todo)
    return ENAMETOOLONG;
  out[0] = 0;
  strcpy(todo, rel);
  const char *p = todo;
  while (*p) {
    size_t clen = strcspn(p, "/");
    const char *comp = p;
    p += clen;
    if (*p == '/')
      p++;
    if (clen == 0 || (clen == 1 && comp[0] == '.'))
      continue;
    if (clen == 2 && comp[0] == '.' && comp[1] == '.') {
      if (olen == 0)
        return EXDEV;
      char *s = strrchr(out, '/');
      olen = s ? (size_t)(s - out) : 0;
      out[olen] = 0;
      continue;
    }
    size_t save = olen;
    if (olen + 1 + clen + 1 > outlen)
      return ENAMETOOLONG;
    if (olen)
      out[olen++] = '/';
    memcpy(out + olen, comp, clen);
    olen += clen;
    out[olen] = 0;
    if (rf__full(c, out, full, sizeof full))
      return ENAMETOOLONG;
    struct stat st;
    if (lstat(full, &st) != 0)
      return errno;
    if (!S_ISLNK(st.st_mode))
      continue;
    if (++hops > RF__HOPS)
      return ELOOP;
    ssize_t n = readlink(full, link, sizeof link);
    if (n < 0)
      return errno;
    if ((size_t)n >= sizeof link)
      return ENAMETOOLONG;
    link[n] = 0;
    olen = save; /* the link is replaced by its target, read from its directory */
    out[olen] = 0;
    const char *t = link;
    if (t[0] == '/') { /* absolute: only inside an absolute root */
      size_t rl = strlen(c->root);
      if ((rl && c->root[0] != '/') || strncmp(t, c->root, rl) != 0 || (t[rl] != '/' && t[rl] != 0))
        return EXDEV;
      t += rl;
      olen = 0;
      out[0] = 0;
    }
    int m = snprintf(next, sizeof next, "%s/%s", t, p);
    if (m < 0 || (size_t)m >= sizeof next)
      return ENAMETOOLONG;
    memcpy(todo, next, (size_t)m + 1);
    p = todo;
  }
  return 0;
}

static const char *rf__errstr(int e)
{
  switch (e) {
  case EXDEV: return "link leads outside the sysfs root";
  case ELOOP: return "too many levels of links";
  default: return strerror(e);
  }
}

/* Reads the one-line attribute rel into buf (without '\n').
 * Returns 0; 1 when it cannot be opened or read (then, when why is given, a reason naming the file
 * is written there); -1 (message in c->err) when a link leaves the root or loops, or the content is
 * empty, cut short (no end of line), too long or more than one line. */
static int rf__attr(rf__ctx *c, const char *rel, char *buf, size_t len, char *why, size_t whylen)
{
  char res[RF__PATH], full[2 * RF__PATH];
  int e = rf__resolve(c, rel, res, sizeof res);
  if (e == EXDEV || e == ELOOP || e == ENAMETOOLONG)
    return rf__fail(c, rel, "%s", rf__errstr(e));
  int fd = -1;
  if (!e && !(e = rf__full(c, res, full, sizeof full))) {
    fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      e = errno;
  }
  ssize_t n = 0;
  if (fd >= 0) {
    n = read(fd, buf, len - 1);
    if (n < 0)
      e = errno;
    close(fd);
  }
  if (e) {
    if (why)
      snprintf(why, whylen, "cannot read %s: %s", rel, rf__errstr(e));
    return 1;
  }
  buf[n] = 0;
  if (n == 0)
    return rf__fail(c, rel, "empty file (truncated?)");
  if ((size_t)n == len - 1 && buf[n - 1] != '\n')
    return rf__fail(c, rel, "longer than %zu bytes", len - 2);
  if (buf[n - 1] != '\n')
    return rf__fail(c, rel, "truncated: '%s' has no end of line", buf);
  buf[--n] = 0;
  if (strchr(buf, '\n'))
    return rf__fail(c, rel, "malformed: more than one line");
  return 0;
}

/* "4: ACTIVE" -> 4 and "ACTIVE"; numbers and names as the kernel's ib_port_state. */
static int rf__parse_state(rf__ctx *c, const char *rel, const char *s, int *num, char *name, size_t len)
{
  static const char *const names[] = {"NOP", "DOWN", "INIT", "ARMED", "ACTIVE", "ACTIVE_DEFER"};
  char *end;
  errno = 0;
  long v = isdigit((unsigned char)s[0]) ? strtol(s, &end, 10) : -1;
  if (v < 0 || errno || end[0] != ':' || end[1] != ' ' || v >= (long)(sizeof names / sizeof names[0]) ||
      strcmp(end + 2, names[v]) != 0 || strlen(end + 2) >= len)
    return rf__fail(c, rel, "malformed port state '%s' (want 'N: NAME', e.g. '4: ACTIVE')", s);
  *num = (int)v;
  strcpy(name, end + 2);
  return 0;
}

/* "400 Gb/sec (4X NDR)" or "2.5 Gb/sec (1X SDR)" -> Gb/s. */
static int rf__parse_rate(rf__ctx *c, const char *rel, const char *s, double *gbps)
{
  char *end;
  double v = isdigit((unsigned char)s[0]) ? strtod(s, &end) : -1;
  static const char unit[] = " Gb/sec";
  size_t ul = sizeof unit - 1;
  if (!(v >= 0) || !isfinite(v) || strncmp(end, unit, ul) != 0)
    goto bad;
  end += ul;
  if (*end) {
    size_t rl = strlen(end);
    if (end[0] != ' ' || end[1] != '(' || end[rl - 1] != ')')
      goto bad;
  }
  *gbps = v;
  return 0;
bad:
  return rf__fail(c, rel, "malformed rate '%s' (want 'N Gb/sec (...)')", s);
}

/* numa_node: "-1" (unknown) or a node number. */
static int rf__parse_numa(rf__ctx *c, const char *rel, const char *s, int *numa)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (end == s || *end || errno || v < -1 || v > 65535)
    return rf__fail(c, rel, "malformed numa_node '%s' (want -1 or a node number)", s);
  *numa = (int)v;
  return 0;
}

/* "0x10de" (digits = 4) or "0x030200" (digits = 6). */
static int rf__parse_hex(rf__ctx *c, const char *rel, const char *s, int digits, unsigned *v)
{
  int ok = s[0] == '0' && s[1] == 'x' && (int)strlen(s) == 2 + digits;
  for (int i = 2; ok && s[i]; i++)
    ok = isxdigit((unsigned char)s[i]);
  if (!ok)
    return rf__fail(c, rel, "malformed '%s' (want 0x and %d hex digits)", s, digits);
  *v = (unsigned)strtoul(s + 2, NULL, 16);
  return 0;
}

/* Natural order: "mlx5_2" < "mlx5_10". */
static int rf__natcmp(const char *a, const char *b)
{
  while (*a && *b) {
    if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
      while (*a == '0' && isdigit((unsigned char)a[1]))
        a++;
      while (*b == '0' && isdigit((unsigned char)b[1]))
        b++;
      size_t la = strspn(a, "0123456789"), lb = strspn(b, "0123456789");
      if (la != lb)
        return la < lb ? -1 : 1;
      int r = strncmp(a, b, la);
      if (r)
        return r;
      a += la;
      b += lb;
      continue;
    }
    if (*a != *b)
      return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
    a++;
    b++;
  }
  return *a ? 1 : *b ? -1 : 0;
}

/* "0000:1b:00.0" (lowercased into out[32]), a wider domain as behind Intel VMD ("10000:01:00.0",
 * up to 8 hex digits), or the short "1b:00.0" (domain 0000 added). */
static int rf__bdf(const char *s, char *out)
{
  char t[32];
  size_t n = strlen(s);
  if (n == 7)
    snprintf(t, sizeof t, "0000:%s", s);
  else if (n >= 12 && n <= 16)
    memcpy(t, s, n + 1);
  else
    return -1;
  n = strlen(t);
  size_t dom = n - 8; /* hex digits before ":bb:dd.f" */
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)t[i];
    size_t k = i < dom ? 0 : i - dom + 4; /* position in "hhhh:hh:hh.d" */
    char want = i < dom ? 'h' : "hhhh:hh:hh.d"[k];
    if (want == 'h' ? !isxdigit(ch) : want == 'd' ? !(ch >= '0' && ch <= '7') : ch != want)
      return -1;
    out[i] = (char)tolower(ch);
  }
  out[n] = 0;
  return 0;
}

/* Lists the names in directory rel (resolved in the root), skipping dot entries, into names[max][64],
 * sorted naturally. Returns the count; 0 with *missing = 1 when rel does not exist; -1 on errors
 * (more than max entries, a name longer than 63 bytes, a link outside the root). */
static int rf__list(rf__ctx *c, const char *rel, char (*names)[64], int max, int *missing)
{
  char res[RF__PATH], full[2 * RF__PATH];
  *missing = 0;
  int e = rf__resolve(c, rel, res, sizeof res);
  if (e == ENOENT) {
    *missing = 1;
    return 0;
  }
  if (e || (e = rf__full(c, res, full, sizeof full)))
    return rf__fail(c, rel, "%s", rf__errstr(e));
  DIR *d = opendir(full);
  if (!d)
    return rf__fail(c, rel, "%s", strerror(errno));
  int n = 0;
  struct dirent *ent;
  while ((ent = readdir(d))) {
    if (ent->d_name[0] == '.')
      continue;
    if (n == max || strlen(ent->d_name) >= 64) {
      closedir(d);
      return n == max ? rf__fail(c, rel, "more than %d entries", max)
                      : rf__fail(c, rel, "name '%.64s...' too long", ent->d_name);
    }
    int i = n++;
    for (; i > 0 && rf__natcmp(names[i - 1], ent->d_name) > 0; i--)
      memcpy(names[i], names[i - 1], 64);
    strcpy(names[i], ent->d_name);
  }
  closedir(d);
  return n;
}

/* The pciDDDD:BB component of a resolved device path (domain of 4 to 8 hex digits), or NULL. */
static const char *rf__pci_root(const char *path)
{
  for (const char *p = path; p && *p; p = strchr(p, '/'), p = p ? p + 1 : NULL) {
    size_t l = strcspn(p, "/"), dom = l - 6; /* "pci" DDDD ":" BB */
    if (l < 10 || l > 14 || strncmp(p, "pci", 3) != 0 || p[3 + dom] != ':')
      continue;
    int ok = 1;
    for (size_t i = 3; i < l; i++)
      ok &= i == 3 + dom || isxdigit((unsigned char)p[i]);
    if (ok)
      return p;
  }
  return NULL;
}

/* PCIe distance between two resolved PCI function paths (relative to the root). Only the parents
 * count: the host bridge pciDDDD:BB, the root port, then switch ports. */
static rf_nic_class rf__distance(const char *gpu, int gpu_numa, const char *nic, int nic_numa)
{
  const char *g = rf__pci_root(gpu), *n = rf__pci_root(nic);
  if (g && n) {
    const char *gl = strrchr(g, '/'), *nl = strrchr(n, '/'); /* the functions themselves */
    int common = 0;
    while (g < gl && n < nl) {
      size_t a = strcspn(g, "/"), b = strcspn(n, "/");
      if (a != b || strncmp(g, n, a) != 0)
        break;
      common++;
      g += a + 1;
      n += b + 1;
    }
    if (common >= 3) /* host bridge, root port, and at least one switch port */
      return RF_NIC_SWITCH;
    if (common >= 1)
      return RF_NIC_HOSTBRIDGE;
  }
  return gpu_numa >= 0 && gpu_numa == nic_numa ? RF_NIC_NUMA : RF_NIC_OTHER;
}

const char *rf_nic_class_name(rf_nic_class cls)
{
  switch (cls) {
  case RF_NIC_UNRANKED: return "unranked";
  case RF_NIC_SWITCH: return "switch";
  case RF_NIC_HOSTBRIDGE: return "hostbridge";
  case RF_NIC_NUMA: return "numa";
  case RF_NIC_OTHER: return "other";
  }
  return "?";
}

/* The PCI function behind rel (a device link): resolved path and numa_node. *present = 0 when rel
 * does not exist. */
static int rf__pci_dev(rf__ctx *c, const char *rel, char *path, size_t len, int *numa, int *present)
{
  char attr[RF__ATTR], numa_rel[RF__PATH + 16];
  *present = 0;
  *numa = -1;
  int e = rf__resolve(c, rel, path, len);
  if (e == ENOENT)
    return 0;
  if (e)
    return rf__fail(c, rel, "%s", rf__errstr(e));
  *present = 1;
  snprintf(numa_rel, sizeof numa_rel, "%s/numa_node", rel);
  int r = rf__attr(c, numa_rel, attr, sizeof attr, NULL, 0);
  if (r < 0)
    return -1;
  if (r == 0 && rf__parse_numa(c, numa_rel, attr, numa))
    return -1;
  return 0;
}

/* Reads every RDMA port under class/infiniband into t, with placement, state, rate and the reason
 * each unusable port is unusable. */
static int rf__discover(rf__ctx *c, rf__topo *t, double min_gbps)
{
  char devs[RF_NIC_MAX][64], ports[RF_NIC_MAX][64], rel[RF__PATH], attr[RF__ATTR];
  int missing;
  int nd = rf__list(c, "class/infiniband", devs, RF_NIC_MAX, &missing);
  t->n_dev = t->n_port = 0;
  t->have_ib = !missing;
  if (nd < 0)
    return -1;
  for (int d = 0; d < nd; d++) {
    rf__dev *dv = &t->dev[t->n_dev++];
    int present;
    strcpy(dv->name, devs[d]);
    rf__fmt(rel, sizeof rel, "class/infiniband/%s/device", devs[d]);
    if (rf__pci_dev(c, rel, dv->path, sizeof dv->path, &dv->numa, &present))
      return -1;
    const char *fn = strrchr(dv->path, '/');
    char bdf[32];
    if (!present || rf__bdf(fn ? fn + 1 : dv->path, bdf))
      dv->path[0] = 0; /* not a PCI function (software RDMA) */
    rf__fmt(rel, sizeof rel, "class/infiniband/%s/ports", devs[d]);
    int np = rf__list(c, rel, ports, RF_NIC_MAX, &missing);
    if (np < 0)
      return -1;
    if (np == 0) { /* no ports: keep the device so that it shows up as skipped */
      if (t->n_port == RF_NIC_MAX)
        return rf__fail(c, "class/infiniband", "more than %d RDMA ports", RF_NIC_MAX);
      rf__port *p = &t->port[t->n_port++];
      memset(p, 0, sizeof *p);
      p->dev = t->n_dev - 1;
      rf__fmt(p->nic.name, sizeof p->nic.name, "%s", devs[d]);
      p->nic.numa = dv->numa;
      rf__fmt(p->nic.why, sizeof p->nic.why, "no ports under %s", rel);
      continue;
    }
    for (int k = 0; k < np; k++) {
      char *end;
      long pn = isdigit((unsigned char)ports[k][0]) ? strtol(ports[k], &end, 10) : 0;
      if (pn <= 0 || pn > 255 || *end)
        return rf__fail(c, rel, "malformed port directory '%s' (want a port number)", ports[k]);
      if (t->n_port == RF_NIC_MAX)
        return rf__fail(c, "class/infiniband", "more than %d RDMA ports", RF_NIC_MAX);
      rf__port *p = &t->port[t->n_port++];
      rf_nic *n = &p->nic;
      memset(p, 0, sizeof *p);
      p->dev = t->n_dev - 1;
      rf__fmt(n->name, sizeof n->name, "%s", devs[d]);
      n->port = (int)pn;
      n->numa = dv->numa;
      if (dv->path[0])
        rf__fmt(n->pci, sizeof n->pci, "%s", strrchr(dv->path, '/') ? strrchr(dv->path, '/') + 1 : dv->path);
      char why[sizeof n->why] = "";
      int num = -1;
      rf__fmt(rel, sizeof rel, "class/infiniband/%s/ports/%ld/state", devs[d], pn);
      int r = rf__attr(c, rel, attr, sizeof attr, why, sizeof why);
      if (r < 0 || (r == 0 && rf__parse_state(c, rel, attr, &num, n->state, sizeof n->state)))
        return -1;
      rf__fmt(rel, sizeof rel, "class/infiniband/%s/ports/%ld/rate", devs[d], pn);
      r = rf__attr(c, rel, attr, sizeof attr, why[0] ? NULL : why, sizeof why);
      if (r < 0 || (r == 0 && rf__parse_rate(c, rel, attr, &n->gbps)))
        return -1;
      rf__fmt(rel, sizeof rel, "class/infiniband/%s/ports/%ld/link_layer", devs[d], pn);
      r = rf__attr(c, rel, attr, sizeof attr, NULL, 0);
      if (r < 0)
        return -1;
      if (r == 0)
        rf__fmt(n->link_layer, sizeof n->link_layer, "%s", attr);
      if (why[0])
        memcpy(n->why, why, sizeof why);
      else if (num != 4)
        rf__fmt(n->why, sizeof n->why, "state %s, not ACTIVE", n->state);
      else if (n->gbps < min_gbps)
        rf__fmt(n->why, sizeof n->why, "rate %g Gb/s below the minimum %g Gb/s", n->gbps, min_gbps);
      else if (!dv->path[0]) {
        rf__fmt(n->why, sizeof n->why, "not a PCI device (class/infiniband/%s/device)", devs[d]);
        p->soft = 1;
      }
      p->usable = !n->why[0];
    }
  }
  return 0;
}

/* Selection order: class, then name (natural), then port. */
static int rf__port_cmp(const rf__port *a, const rf__port *b)
{
  if (a->nic.cls != b->nic.cls)
    return a->nic.cls < b->nic.cls ? -1 : 1;
  int r = rf__natcmp(a->nic.name, b->nic.name);
  return r ? r : a->nic.port - b->nic.port;
}

static void rf__sort(rf__topo *t, int *idx)
{
  for (int i = 0; i < t->n_port; i++) {
    int j = i;
    for (; j > 0 && rf__port_cmp(&t->port[idx[j - 1]], &t->port[i]) > 0; j--)
      idx[j] = idx[j - 1];
    idx[j] = i;
  }
}

/* Explicit list "name[:port],...": each entry must name usable ports; chosen in list order. */
static int rf__select_list(rf__ctx *c, rf__topo *t, const char *mode, rf_nic_result *out, char *taken)
{
  const char *p = mode;
  for (;;) {
    size_t l = strcspn(p, ",");
    char item[96], name[64];
    if (l == 0 || l >= sizeof item)
      return rf__fail(c, NULL, "NIC list '%s': %s entry", mode, l ? "too long an" : "empty");
    memcpy(item, p, l);
    item[l] = 0;
    long port = 0;
    char *colon = strchr(item, ':');
    if (colon) {
      char *end;
      port = isdigit((unsigned char)colon[1]) ? strtol(colon + 1, &end, 10) : 0;
      if (port <= 0 || port > 255 || *end)
        return rf__fail(c, NULL, "NIC list '%s': bad port in '%s' (want name[:port])", mode, item);
      *colon = 0;
    }
    if (strlen(item) >= sizeof name)
      return rf__fail(c, NULL, "NIC list '%s': name '%s' too long", mode, item);
    strcpy(name, item);
    int found = 0, got = 0;
    const char *first_why = NULL;
    for (int i = 0; i < t->n_port; i++) {
      rf_nic *n = &t->port[i].nic;
      if (strcmp(n->name, name) != 0)
        continue;
      found = 1;
      if (port && n->port != port)
        continue;
      if (!t->port[i].usable) {
        if (port)
          return rf__fail(c, NULL, "%s:%ld: %s", name, port, n->why);
        if (!first_why)
          first_why = n->why;
        continue;
      }
      if (taken[i])
        return rf__fail(c, NULL, "%s:%d: listed twice in '%s'", name, n->port, mode);
      taken[i] = 1;
      out->chosen[out->n_chosen++] = *n;
      got = 1;
    }
    if (!found)
      return rf__fail(c, NULL, "%s: no such RDMA device under %s/class/infiniband", name, c->shown);
    if (!got && port)
      return rf__fail(c, NULL, "%s:%ld: no such port", name, port);
    if (!got)
      return rf__fail(c, NULL, "%s: no usable port (%s)", name, first_why);
    p += l;
    if (!*p)
      return 0;
    p++;
  }
}

int rf_nic_select(const char *sysfs_root, const char *gpu_bdf, const char *mode, double min_gbps,
                  rf_nic_result *out)
{
  if (!out)
    return -1;
  memset(out, 0, sizeof *out);
  rf__ctx c;
  rf__ctx_init(&c, sysfs_root, out->error, sizeof out->error);
  if (!mode || !mode[0])
    return rf__fail(&c, NULL, "no NIC mode (want auto, stripe, off or name[:port],...)");
  if (!(min_gbps >= 0) || !isfinite(min_gbps))
    return rf__fail(&c, NULL, "minimum rate %g Gb/s is not a rate", min_gbps);
  if (strcmp(mode, "off") == 0)
    return 0;
  int is_auto = strcmp(mode, "auto") == 0, is_stripe = strcmp(mode, "stripe") == 0;
  if (is_auto && !gpu_bdf)
    return rf__fail(&c, NULL, "mode auto needs a GPU PCI address");

  char gpu[32], gpu_path[RF__PATH] = "", rel[64];
  int gpu_numa = -1;
  if (gpu_bdf) {
    int present;
    if (rf__bdf(gpu_bdf, gpu))
      return rf__fail(&c, NULL, "GPU address '%s' is not a PCI address like 0000:1b:00.0", gpu_bdf);
    snprintf(rel, sizeof rel, "bus/pci/devices/%s", gpu);
    if (rf__pci_dev(&c, rel, gpu_path, sizeof gpu_path, &gpu_numa, &present))
      return -1;
    if (!present)
      return rf__fail(&c, rel, "no such PCI device (GPU %s)", gpu_bdf);
  }

  rf__topo *t = malloc(sizeof *t); /* ~100 KiB: off the caller's stack */
  if (!t)
    return rf__fail(&c, NULL, "out of memory");
  int rc = -1;
  if (rf__discover(&c, t, min_gbps))
    goto done;
  for (int i = 0; i < t->n_port; i++) {
    const rf__dev *d = &t->dev[t->port[i].dev];
    rf_nic *n = &t->port[i].nic;
    n->cls = !gpu_bdf ? RF_NIC_UNRANKED : d->path[0] ? rf__distance(gpu_path, gpu_numa, d->path, d->numa)
                                                     : RF_NIC_OTHER;
  }
  int idx[RF_NIC_MAX];
  char taken[RF_NIC_MAX] = {0};
  rf__sort(t, idx);
  if (!is_auto && !is_stripe) {
    if (t->n_port == 0) {
      size_t l = strcspn(mode, ",:");
      rf__fail(&c, NULL, "%.*s: no such RDMA device (no RDMA devices under %s/class/infiniband)", (int)l,
               mode, c.shown);
      goto done;
    }
    for (int i = 0; i < t->n_port; i++)
      if (t->port[i].soft) { /* named explicitly: the user wants it, PCI or not */
        t->port[i].usable = 1;
        t->port[i].nic.why[0] = 0;
      }
    if (rf__select_list(&c, t, mode, out, taken))
      goto done;
  } else {
    rf_nic_class best = RF_NIC_OTHER;
    for (int i = 0; i < t->n_port; i++)
      if (t->port[i].usable && t->port[i].nic.cls < best)
        best = t->port[i].nic.cls;
    for (int k = 0; k < t->n_port; k++) {
      rf__port *p = &t->port[idx[k]];
      if (p->usable && (is_stripe || p->nic.cls == best)) {
        taken[idx[k]] = 1;
        out->chosen[out->n_chosen++] = p->nic;
      }
    }
  }
  for (int k = 0; k < t->n_port; k++) {
    rf__port *p = &t->port[idx[k]];
    if (taken[idx[k]])
      continue;
    rf_nic *s = &out->skipped[out->n_skipped++];
    *s = p->nic;
    if (!s->why[0] && is_auto)
      snprintf(s->why, sizeof s->why, "farther (%s) than the chosen (%s)", rf_nic_class_name(s->cls),
               rf_nic_class_name(out->chosen[0].cls));
    else if (!s->why[0])
      snprintf(s->why, sizeof s->why, "not in the list");
  }
  if (out->n_chosen == 0 && t->n_port > 0) {
    const rf_nic *s = &out->skipped[0];
    rf__fail(&c, NULL, "no usable RDMA port among %d (first: %s:%d %s)", t->n_port, s->name, s->port, s->why);
    goto done;
  }
  rc = 0;
done:
  if (rc)
    out->n_chosen = 0; /* a failed call chooses nothing; skipped[] keeps the reasons */
  free(t);
  return rc;
}

int rf_nic_net_devices(const rf_nic_result *r, char *buf, size_t len)
{
  if (!r || !buf || len == 0)
    return -1;
  size_t off = 0;
  buf[0] = 0;
  for (int i = 0; i < r->n_chosen; i++) {
    int n = snprintf(buf + off, len - off, "%s%s:%d", i ? "," : "", r->chosen[i].name, r->chosen[i].port);
    if (n < 0 || (size_t)n >= len - off) {
      buf[0] = 0;
      return -1;
    }
    off += (size_t)n;
  }
  return (int)off;
}

int rf_nic_list_gpus(const char *sysfs_root, char (*bdf)[32], int max, char *err, size_t errlen)
{
  rf__ctx c;
  rf__ctx_init(&c, sysfs_root, err, errlen);
  if (max < 0 || (max > 0 && !bdf))
    return rf__fail(&c, NULL, "no room for GPU addresses");
  char res[RF__PATH], full[2 * RF__PATH], rel[RF__PATH], attr[RF__ATTR];
  const char *dir = "bus/pci/devices";
  int e = rf__resolve(&c, dir, res, sizeof res);
  if (e == ENOENT)
    return 0;
  if (e || (e = rf__full(&c, res, full, sizeof full)))
    return rf__fail(&c, dir, "%s", rf__errstr(e));
  DIR *d = opendir(full);
  if (!d)
    return rf__fail(&c, dir, "%s", strerror(errno));
  int count = 0;
  struct dirent *ent;
  while ((ent = readdir(d))) {
    char b[32];
    if (ent->d_name[0] == '.' || rf__bdf(ent->d_name, b) || strcmp(b, ent->d_name) != 0)
      continue; /* only canonical addresses are PCI functions */
    unsigned vendor = 0, cls = 0;
    snprintf(rel, sizeof rel, "%s/%s/vendor", dir, ent->d_name);
    int r = rf__attr(&c, rel, attr, sizeof attr, NULL, 0);
    if (r < 0 || (r == 0 && rf__parse_hex(&c, rel, attr, 4, &vendor)))
      goto fail;
    snprintf(rel, sizeof rel, "%s/%s/class", dir, ent->d_name);
    r = r ? r : rf__attr(&c, rel, attr, sizeof attr, NULL, 0);
    if (r < 0 || (r == 0 && rf__parse_hex(&c, rel, attr, 6, &cls)))
      goto fail;
    if (r || vendor != 0x10de || (cls != 0x030000 && cls != 0x030200))
      continue;
    /* keep the max smallest addresses, sorted */
    int i = count < max ? count : max;
    count++;
    for (; i > 0 && strcmp(bdf[i - 1], b) > 0; i--)
      if (i < max)
        memcpy(bdf[i], bdf[i - 1], 32);
    if (i < max)
      strcpy(bdf[i], b);
  }
  closedir(d);
  return count;
fail:
  closedir(d);
  return -1;
}
