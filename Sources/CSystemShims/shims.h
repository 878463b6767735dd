#ifndef CUSTOS_CSYSTEMSHIMS_H
#define CUSTOS_CSYSTEMSHIMS_H
// prctl is variadic and does not import into Swift; these wrappers give it fixed arguments.
#include <sys/prctl.h>

static inline int custos_set_dumpable(int dumpable) {
    return prctl(PR_SET_DUMPABLE, (unsigned long)dumpable, 0UL, 0UL, 0UL);
}

static inline int custos_get_dumpable(void) {
    return prctl(PR_GET_DUMPABLE, 0UL, 0UL, 0UL, 0UL);
}
#endif
