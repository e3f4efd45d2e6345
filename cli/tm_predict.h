/*  tm_predict - twinctl twin forecast / twin simulate: predictions from a twin

    The worker that owns a twin answers FORECAST_GET from the property's
    Holt level and trend (worker/tm_analytics.h): forecast points over a
    horizon with an uncertainty, and the time until the series reaches a
    limit ("vibration_rms reaches 7.1 in about 3h10m"). simulate is the
    same question after a what-if value, asked on a copy of the twin's
    state on the worker: the live twin never changes.
*/
#ifndef TM_PREDICT_H_INCLUDED
#define TM_PREDICT_H_INCLUDED

//  "twinctl twin forecast ID PROP ..."; argv[0] is "forecast". Exit code.
int tm_predict_forecast_main (int argc, char **argv);

//  "twinctl twin simulate ID --set PROP=VALUE ..."; argv[0] is "simulate".
int tm_predict_simulate_main (int argc, char **argv);

#endif
