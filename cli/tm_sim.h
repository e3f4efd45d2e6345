/*  tm_sim - twinctl sim: a simulated city feeding a gateway

    Generates N twins of several kinds (air-quality stations, traffic
    counters, parking bays) with locations and districts, diurnal cycles
    plus noise, and sends their readings at a target rate with a credit
    window of batches in flight, printing acked readings/s and ack latency.
*/
#ifndef TM_SIM_H_INCLUDED
#define TM_SIM_H_INCLUDED

//  Run "twinctl sim ARGS"; argv[0] is "sim". Returns the process exit code.
int tm_sim_main (int argc, char **argv);

#endif
