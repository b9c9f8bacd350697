/* threads.c - thread-count policy: BERTH_NUM_THREADS, else cgroup quota, else affinity. */
#define _GNU_SOURCE
#include "runtime/threads.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads the first line of root/dir/name into buf; 0 on success. */
static int read_line(const char *root, const char *dir, const char *name, char *buf, size_t size)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s%s/%s", root, dir, name);
    if (n < 0 || (size_t)n >= sizeof path)
        return -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *ok = fgets(buf, (int)size, f);
    fclose(f);
    return ok ? 0 : -1;
}

static int ceil_div(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return 0;
    long long cpus = (quota + period - 1) / period;
    return cpus > INT_MAX ? INT_MAX : (int)cpus;
}

/* The limit set on one cgroup directory, 0 if none. */
static int limit_at(const char *root, const char *dir)
{
    char line[256];
    if (read_line(root, dir, "cpu.max", line, sizeof line) == 0) { /* cgroup v2 */
        char quota[64];
        long long period = 0;
        if (sscanf(line, "%63s %lld", quota, &period) == 2 && strcmp(quota, "max") != 0)
            return ceil_div(strtoll(quota, NULL, 10), period);
        return 0;
    }
    char q[64], p[64];
    if (read_line(root, dir, "cpu.cfs_quota_us", q, sizeof q) == 0 &&
        read_line(root, dir, "cpu.cfs_period_us", p, sizeof p) == 0) /* cgroup v1 */
        return ceil_div(strtoll(q, NULL, 10), strtoll(p, NULL, 10));
    return 0;
}

int bt_cgroup_cpu_limit(const char *cgroup_root, const char *self_path)
{
    char dir[PATH_MAX];
    int best = 0;
    if (!cgroup_root || !self_path)
        return 0;
    snprintf(dir, sizeof dir, "%s", self_path);
    for (;;) {
        size_t len = strlen(dir);
        while (len > 1 && dir[len - 1] == '/')
            dir[--len] = '\0';
        int limit = limit_at(cgroup_root, strcmp(dir, "/") == 0 ? "" : dir);
        if (limit > 0 && (best == 0 || limit < best))
            best = limit;
        if (strcmp(dir, "/") == 0 || len == 0)
            break;
        char *slash = strrchr(dir, '/');
        if (!slash)
            break;
        if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
    }
    return best;
}

int bt_affinity_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    return 1;
}

/* Whether the comma-separated list holds token exactly ("cpu" in "cpu,cpuacct"). */
static int has_token(const char *list, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, token, n) == 0)
            return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

/* This process's cgroup v2 path ("0::/path"), or v1 path of the cpu controller. */
static void own_cgroup(char *out, size_t size, char *v1_sub, size_t v1_size)
{
    snprintf(out, size, "/");
    v1_sub[0] = '\0';
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return;
    char line[PATH_MAX + 64];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = '\0';
        const char *controllers = c1 + 1, *path = c2 + 1;
        if (strcmp(line, "0") == 0 && controllers[0] == '\0') {
            snprintf(out, size, "%s", path);
        } else if (has_token(controllers, "cpu")) {
            snprintf(v1_sub, v1_size, "/%s", controllers);
            snprintf(out, size, "%s", path);
        }
    }
    fclose(f);
}

int bt_default_num_threads(bt_error *err)
{
    const char *env = getenv("BERTH_NUM_THREADS");
    if (env && env[0]) {
        char *end = NULL;
        errno = 0;
        long n = strtol(env, &end, 10);
        while (end && (*end == ' ' || *end == '\n'))
            ++end;
        if (errno || !end || *end || n <= 0 || n > BT_MAX_NUM_THREADS)
            return bt_error_set(err, BT_ERR_VALUE,
                                "BERTH_NUM_THREADS must be a positive integer, got '%s'", env);
        return (int)n;
    }
    int cpus = bt_affinity_cpus();
    char self[PATH_MAX], v1_sub[128], root[PATH_MAX + 160];
    own_cgroup(self, sizeof self, v1_sub, sizeof v1_sub);
    snprintf(root, sizeof root, "/sys/fs/cgroup%s", v1_sub);
    int limit = bt_cgroup_cpu_limit(root, self);
    if (limit == 0 && strcmp(self, "/") != 0)
        limit = bt_cgroup_cpu_limit(root, "/");
    return (limit > 0 && limit < cpus) ? limit : cpus;
}
