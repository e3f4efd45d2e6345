/*  tm_replay - twinctl replay: send a real data set (CSV) through a gateway

    Maps CSV columns to entity, timestamp and properties (long tables) or
    treats each column as an entity (wide tables), with presets for the data
    sets in shared/data, and sends them in batches with a credit window.
*/
#ifndef TM_REPLAY_H_INCLUDED
#define TM_REPLAY_H_INCLUDED

//  Run "twinctl replay ARGS"; argv[0] is "replay". Returns the exit code.
int tm_replay_main (int argc, char **argv);

#endif
