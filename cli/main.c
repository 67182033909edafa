/* refit: command-line entry. `refit demo`, `refit nics`, `refit plan`, `refit import-hf`. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
  const char *name, *help;
  int (*fn)(int, char **);
} cmds[] = {
  {"demo", "loopback demo: trainers push versions of the tiny GLM plan into receivers", rf_cmd_demo},
  {"nics", "show the NICs chosen for each GPU and why others were skipped", rf_cmd_nics},
  {"plan", "predicted update time of a plan at cluster scale", rf_cmd_plan},
  {"import-hf", "write models/N.lua from a Hugging Face config.json (CONFIG.json --name N)", rf_cmd_import_hf},
};

static int usage(FILE *f, int rc)
{
  fprintf(f, "usage: refit <command> [options]   (refit <command> --help: its options)\n");
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    fprintf(f, "  %-9s %s\n", cmds[i].name, cmds[i].help);
  return rc;
}

int main(int argc, char **argv)
{
  if (argc < 2) return usage(stderr, 2);
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)
    return usage(stdout, 0);
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    if (strcmp(argv[1], cmds[i].name) == 0)
      return cmds[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "refit: unknown command '%s'\n", argv[1]);
  return usage(stderr, 2);
}
