/* refit nics: not built yet. */
#include <stdio.h>

#include "cli.h"

int rf_cmd_nics(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  fprintf(stderr, "refit nics: not available in this build\n");
  return 2;
}
