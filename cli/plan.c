/* refit plan: not built yet. */
#include <stdio.h>

#include "cli.h"

int rf_cmd_plan(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "refit plan: not available in this build\n");
  return 2;
}
