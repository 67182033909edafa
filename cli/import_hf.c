/* refit import-hf CONFIG.json --name N [--out DIR]: write DIR/N.lua (DIR: models), a model
 * description, from a Hugging Face config.json. The mapping and its refusals live in
 * gen/import_hf.lua, run with the Lua interpreter configure found (RF_LUA); run refit from the
 * repository root, where the generator finds models/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#ifndef RF_LUA
#error "RF_LUA must name the Lua interpreter (cli/part.ninja passes config.ninja's lua)"
#endif

int rf_cmd_import_hf(int argc, char **argv)
{
  static char lua[] = RF_LUA, script[] = "gen/import_hf.lua";
  if (access(script, R_OK) != 0) {
    fprintf(stderr, "refit import-hf: %s not found: run refit from the repository root\n", script);
    return 2;
  }
  char **args = calloc((size_t)argc + 2, sizeof *args);
  if (!args) return 1;
  args[0] = lua;
  args[1] = script;
  for (int i = 1; i < argc; i++) args[i + 1] = argv[i];
  execv(lua, args);
  fprintf(stderr, "refit import-hf: cannot run %s: %s\n", lua, strerror(errno));
  free(args);
  return 1;
}
