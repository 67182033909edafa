/* refit demo: not built yet. */
#include <stdio.h>

#include "cli.h"

int rf_cmd_demo(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "refit demo: not available in this build\n");
  return 2;
}
