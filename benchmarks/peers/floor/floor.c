/* The HTTP floor: libmicrohttpd answering every request with one fixed body, no model.
 *
 * It reads (and drops) the request body and answers 200 with a small v2-shaped JSON body,
 * so the peers table shows what the HTTP library alone allows on the same core. Threads:
 * MHD's internal polling thread with a thread pool of argv[2] threads (default 1: the
 * server is pinned to one CPU), epoll, the same as berth serve's transport.
 *
 *   gcc -O2 -o floor floor.c $(pkg-config --cflags --libs libmicrohttpd)
 *   ./floor PORT [THREADS]
 */
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char BODY[] =
    "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[1,1],"
    "\"data\":[0.0]}]}";

static struct MHD_Response *answer;
static volatile sig_atomic_t stop;

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *data,
                              size_t *size, void **state) {
    (void)cls; (void)url; (void)method; (void)version; (void)data;
    if (*state == NULL) { /* first call: headers only */
        *state = (void *)1;
        return MHD_YES;
    }
    if (*size) { /* a piece of the body: drop it */
        *size = 0;
        return MHD_YES;
    }
    return MHD_queue_response(c, MHD_HTTP_OK, answer);
}

static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
        return 2;
    }
    unsigned threads = argc > 2 ? (unsigned)atoi(argv[2]) : 1;
    answer = MHD_create_response_from_buffer(sizeof BODY - 1, (void *)BODY, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(answer, "Content-Type", "application/json");
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, (uint16_t)atoi(argv[1]), NULL, NULL,
        handle, NULL, MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, 4096u,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "floor: cannot listen on port %s\n", argv[1]);
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    while (!stop) pause();
    MHD_stop_daemon(d);
    MHD_destroy_response(answer);
    return 0;
}
