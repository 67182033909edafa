/* cli.h: the subcommands of the refit program; each lives in its own file. */
#ifndef REFIT_CLI_H
#define REFIT_CLI_H
int rf_cmd_demo(int argc, char **argv);
int rf_cmd_nics(int argc, char **argv);
int rf_cmd_plan(int argc, char **argv);
int rf_cmd_import_hf(int argc, char **argv);
#endif
