/* cli.h - the gpupool command's subcommands. Each takes the arguments after its name and returns the
 * process exit status (0 ok, 1 failure, 2 usage error). The CLI is a thin client of the libraries. */
#ifndef GP_CLI_CLI_H
#define GP_CLI_CLI_H

int gp_cmd_smi(int argc, char **argv);
int gp_cmd_sim(int argc, char **argv);
int gp_cmd_slot(int argc, char **argv);
int gp_cmd_agent(int argc, char **argv);
int gp_cmd_controller(int argc, char **argv);
int gp_cmd_up(int argc, char **argv);
int gp_cmd_run(int argc, char **argv);
int gp_cmd_get(int argc, char **argv);
int gp_cmd_describe(int argc, char **argv);
int gp_cmd_delete(int argc, char **argv);
int gp_cmd_worker(int argc, char **argv);

#endif
