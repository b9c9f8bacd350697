/*
 * threads.h - how many intra-op threads libtorch should use in this process.
 * BERTH_NUM_THREADS wins; else the cgroup CPU quota (a pod limited to 2 CPUs on a
 * 64-core node must not start 64 threads); else the CPUs this process may run on.
 */
#ifndef BERTH_THREADS_H
#define BERTH_THREADS_H

#include "runtime/error.h"

/* CPUs allowed by the cgroup (v2 cpu.max or v1 cfs quota) found under cgroup_root for the
 * cgroup path self_path ("/" or "/kubepods/pod1/c1"), walking up to the root and taking the
 * smallest limit, rounded up. 0 when there is no limit. */
int bt_cgroup_cpu_limit(const char *cgroup_root, const char *self_path);

/* CPUs in this process's affinity mask (at least 1). */
int bt_affinity_cpus(void);

/* The count berth uses: see the header comment. -1 with err set when BERTH_NUM_THREADS
 * is set but not a positive integer. */
int bt_default_num_threads(bt_error *err);

/* The most intra-op threads BERTH_NUM_THREADS (and serve's --threads) may ask for. */
#define BT_MAX_NUM_THREADS 4096

#endif /* BERTH_THREADS_H */
