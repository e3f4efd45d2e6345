/*  tm_models_cli - twinctl model load / list / show: the broker's catalogue

    Models are files people write (docs/models.md), so load checks each
    file locally first and reports a mistake with the file and the JSON
    path that holds it, before anything is sent; the broker checks again
    (it trusts no client) and decides stored, unchanged or refused by
    version. list and show read the catalogue back, as the broker holds
    it: its canonical form.
*/
#ifndef TM_MODELS_CLI_H_INCLUDED
#define TM_MODELS_CLI_H_INCLUDED

//  "twinctl model SUBCOMMAND ..."; argv[0] is "model". Returns the exit
//  code: 0 done, 1 failed, 2 usage.
int tm_models_cli_main (int argc, char **argv);

#endif
