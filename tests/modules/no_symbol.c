/* A shared object that is not a Celer module (no celer_module symbol). */
int not_a_module(void);
int not_a_module(void) { return 42; }
