/*
 * A sensor written in C: sends five temperature readings over a COCHANNEL
 * to a Rust process, asks that process's coservice for the average so far,
 * and says goodbye. Run `c-partner` (Rust) first; see README.md.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "comesg.h"

#define FAIL(what)                                                            \
    do {                                                                      \
        fprintf(stderr, "sensor: %s: %s\n", what, comesg_last_error());      \
        return 1;                                                             \
    } while (0)

int main(void) {
    comesg_conn *conn;
    /* NULL: the default socket ($COMESG_SOCKET, else the per-user path). */
    if (comesg_connect(NULL, &conn) != 0) FAIL("connect");

    comesg_channel *readings;
    if (comesg_channel_open(conn, "/example-c/readings", COMESG_SEND, &readings) != 0) FAIL("open readings");
    const double temps[] = {21.5, 22.0, 22.5, 23.0, 21.0};
    for (int i = 0; i < 5; i++) {
        char msg[64];
        int len = snprintf(msg, sizeof msg, "%.1f", temps[i]);
        if (comesg_channel_send(readings, msg, (size_t)len, 1000) != 0) FAIL("send");
    }

    comesg_service *stats;
    if (comesg_service_open(conn, "/example-c/stats", &stats) != 0) FAIL("open stats");
    char answer[128];
    /* The partner may not have taken every reading yet: ask until it has. */
    for (int tries = 0;; tries++) {
        int64_t n = comesg_service_call(stats, "average", 7, answer, sizeof answer - 1, 1000);
        if (n < 0) FAIL("call");
        answer[n < (int64_t)sizeof answer ? n : (int64_t)sizeof answer - 1] = 0;
        if (strncmp(answer, "5 readings", 10) == 0 || tries == 100) break;
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    printf("partner says: %s\n", answer);

    if (comesg_channel_send(readings, "bye", 3, 1000) != 0) FAIL("send bye");
    comesg_service_close(stats);
    comesg_channel_close(readings);
    comesg_disconnect(conn);
    return 0;
}
