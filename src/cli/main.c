/* main.c — the `corevital` executable: everything is in cv_cli_main (src/cli/run_cmd.c). */
#include "corevital/cli.h"

int main(int argc, char **argv) {
    return cv_cli_main(argc, argv);
}
