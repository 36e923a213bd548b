/*
 * The C API against a Rust process, through one microkernel. Started by
 * crates/comesg-cli/tests/c_api.rs as `c_api_test SOCKET BASE ROUNDS`; that
 * Rust process made the ports under BASE and plays the other side. Each
 * phase prints one line on stdout; the Rust side answers some on stdin.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comesg.h"

static const char *base;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "c_api_test:%d: %s failed: ", __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, " (last error: %s)\n", comesg_last_error());       \
            exit(1);                                                            \
        }                                                                       \
    } while (0)

static char *path(const char *leaf) {
    static char buf[8][256];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", base, leaf);
    return p;
}

static void say(const char *line) {
    printf("%s\n", line);
    fflush(stdout);
}

static void expect_line(const char *want) {
    char line[128];
    CHECK(fgets(line, sizeof line, stdin) != NULL, "no line from the Rust side");
    line[strcspn(line, "\n")] = 0;
    CHECK(strcmp(line, want) == 0, "expected '%s', got '%s'", want, line);
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The service this program provides: answers with the request reversed,
 * and fails a request that says "fail". */
static int64_t reverse(void *ctx, const void *req, size_t len, void *resp, size_t cap) {
    (void)ctx;
    if (len == 4 && memcmp(req, "fail", 4) == 0) return -1;
    if (len > cap) return -1;
    for (size_t i = 0; i < len; i++) ((uint8_t *)resp)[i] = ((const uint8_t *)req)[len - 1 - i];
    return (int64_t)len;
}

static int unlock_elsewhere_rc;

/* Another thread may not unlock what this one locked; the lock stays. */
static void *unlock_elsewhere(void *m) {
    unlock_elsewhere_rc = comesg_mutex_unlock((comesg_mutex *)m);
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 4, "usage: c_api_test SOCKET BASE ROUNDS");
    base = argv[2];
    long rounds = atol(argv[3]);
    comesg_conn *conn = NULL;
    CHECK(comesg_connect(argv[1], &conn) == 0, "connect");
    char buf[4096];
    int64_t n;

    /* Errors come back as negative errno values with a message. */
    comesg_channel *none = NULL;
    CHECK(comesg_channel_open(conn, path("missing"), COMESG_RECV, &none) == -ENOENT, "open of a missing name");
    CHECK(strstr(comesg_last_error(), "missing") != NULL, "message names the path: %s", comesg_last_error());
    CHECK(comesg_channel_open(NULL, path("missing"), COMESG_RECV, &none) == -EINVAL, "NULL connection");
    CHECK(comesg_channel_open(conn, path("to_c"), 7, &none) == -EINVAL, "bad rights");

    /* Channel: three messages from Rust, upper-cased back. */
    comesg_channel *to_c = NULL, *from_c = NULL;
    CHECK(comesg_channel_open(conn, path("to_c"), COMESG_RECV, &to_c) == 0, "open to_c");
    CHECK(comesg_channel_open(conn, path("from_c"), COMESG_SEND, &from_c) == 0, "open from_c");
    for (int i = 0; i < 3; i++) {
        n = comesg_channel_recv(to_c, buf, sizeof buf, 5000);
        CHECK(n > 0, "receive %d: %lld", i, (long long)n);
        for (int64_t j = 0; j < n; j++) buf[j] = (char)toupper((unsigned char)buf[j]);
        CHECK(comesg_channel_send(from_c, buf, (size_t)n, 5000) == 0, "send back %d", i);
    }
    CHECK(comesg_channel_recv(to_c, buf, sizeof buf, 0) == -EAGAIN, "empty channel, no wait");
    CHECK(comesg_channel_send(from_c, "truncate", 8, 0) == 0, "send to self");
    comesg_channel *own = NULL;
    CHECK(comesg_channel_open(conn, path("from_c"), COMESG_RECV, &own) == 0, "open from_c to receive");
    CHECK(comesg_channel_send(to_c, "x", 1, 0) == -EPERM, "send on a RECV-only handle");
    char big[1000] = {0};
    CHECK(comesg_channel_send(from_c, big, sizeof big, 0) == -EMSGSIZE, "message over the slot size");
    say("channel ok");
    expect_line("take yours");
    n = comesg_channel_recv(own, buf, 3, 5000);
    CHECK(n == 8 && memcmp(buf, "tru", 3) == 0, "a short buffer gets the start and the full length (%lld)", (long long)n);
    comesg_channel_close(own);

    /* Round trips with a Rust echo thread, each timed. */
    comesg_channel *ping = NULL, *pong = NULL;
    CHECK(comesg_channel_open(conn, path("rt_ping"), COMESG_SEND, &ping) == 0, "open rt_ping");
    CHECK(comesg_channel_open(conn, path("rt_pong"), COMESG_RECV, &pong) == 0, "open rt_pong");
    double *rt = calloc((size_t)rounds, sizeof *rt);
    CHECK(rt != NULL, "memory");
    char msg[64] = {0};
    for (long i = 0; i < rounds; i++) {
        memcpy(msg, &i, sizeof i);
        double t = now_ns();
        CHECK(comesg_channel_send(ping, msg, sizeof msg, 5000) == 0, "ping %ld", i);
        CHECK(comesg_channel_recv(pong, buf, sizeof buf, 5000) == 64, "pong %ld", i);
        rt[i] = now_ns() - t;
        CHECK(memcmp(buf, &i, sizeof i) == 0, "pong %ld carries another number", i);
    }
    qsort(rt, (size_t)rounds, sizeof *rt, cmp_double);
    printf("round trip C->Rust median %.0f ns p99 %.0f ns\n", rt[rounds / 2], rt[rounds * 99 / 100]);
    fflush(stdout);
    free(rt);

    /* Calling a service that the Rust process provides. */
    comesg_service *upper = NULL;
    CHECK(comesg_service_open(conn, path("upper"), &upper) == 0, "open the service");
    n = comesg_service_call(upper, "hello", 5, buf, sizeof buf, 5000);
    CHECK(n == 5 && memcmp(buf, "HELLO", 5) == 0, "call answered %lld", (long long)n);
    n = comesg_service_call(upper, "hello", 5, buf, 2, 5000);
    CHECK(n == 5 && memcmp(buf, "HE", 2) == 0, "a short buffer gets the start and the full length");
    memcpy(buf, "same buffer", 11);
    n = comesg_service_call(upper, buf, 11, buf, sizeof buf, 5000);
    CHECK(n == 11 && memcmp(buf, "SAME BUFFER", 11) == 0, "request and response in one buffer");
    CHECK(comesg_service_call(upper, "x", 1, buf, sizeof buf, 0) == -EINVAL, "a call with timeout 0");
    say("call ok");

    /* COPIPE: the Rust side sends once this program waits. */
    comesg_pipe *pipe = NULL;
    CHECK(comesg_pipe_open(conn, path("pipe"), COMESG_RECV, &pipe) == 0, "open the pipe");
    say("pipe waiting");
    n = comesg_pipe_recv(pipe, buf, sizeof buf, 10000);
    CHECK(n == 16 && memcmp(buf, "through the pipe", 16) == 0, "pipe message (%lld bytes)", (long long)n);
    say("pipe ok");

    /* COCARRIER: one message in, one out. */
    comesg_carrier *cin = NULL, *cout = NULL;
    CHECK(comesg_carrier_open(conn, path("carrier_in"), COMESG_RECV, &cin) == 0, "open carrier_in");
    CHECK(comesg_carrier_open(conn, path("carrier_out"), COMESG_SEND, &cout) == 0, "open carrier_out");
    say("carrier waiting");
    n = comesg_carrier_recv(cin, buf, sizeof buf, 5000);
    CHECK(n == 13 && memcmp(buf, "sealed for C.", 13) == 0, "carrier message (%lld bytes)", (long long)n);
    CHECK(comesg_carrier_send(cout, "sealed for Rust.", 16, 5000) == 0, "carrier send");
    say("carrier ok");

    /* Zero copy on a channel: a loaned slot, a cancelled loan, a message
     * received in place. */
    comesg_loan *loan = NULL;
    CHECK(comesg_channel_loan(from_c, 5000, &loan) == 0, "loan a slot");
    size_t cap = 0;
    char *slot = comesg_loan_data(loan, &cap);
    CHECK(slot != NULL && cap == 64, "a loaned slot of %zu bytes", cap);
    memcpy(slot, "loaned", 6);
    CHECK(comesg_loan_send(loan, 6) == 0, "send the loan");
    CHECK(comesg_channel_loan(from_c, 5000, &loan) == 0, "loan another");
    memcpy(comesg_loan_data(loan, NULL), "cancelled", 9);
    comesg_loan_cancel(loan);
    CHECK(comesg_channel_loan(to_c, 0, &loan) == -EPERM, "loan on a RECV-only handle");
    say("zero copy waiting");
    comesg_slot *in = NULL;
    CHECK(comesg_channel_recv_in_place(to_c, 5000, &in) == 0, "receive in place");
    size_t len = 0;
    const char *data = comesg_slot_data(in, &len);
    CHECK(len == 8 && memcmp(data, "in place", 8) == 0, "the message in place (%zu bytes)", len);
    CHECK(comesg_slot_release(in) == 0, "release the slot");
    CHECK(comesg_channel_recv_in_place(to_c, 0, &in) == -EAGAIN, "nothing more in place");

    /* A carrier message built in place, sealed when sent, carrying a
     * handle to a channel; a right this handle lacks cannot be passed on. */
    comesg_building *b = NULL;
    CHECK(comesg_carrier_build(cout, 12, &b) == 0, "build a message in place");
    size_t blen = 0;
    char *bd = comesg_building_data(b, &blen);
    CHECK(bd != NULL && blen == 12, "the message being built has %zu bytes", blen);
    memcpy(bd, "built in C!!", 12);
    comesg_attach att = {COMESG_KIND_CHANNEL, from_c, COMESG_SEND};
    CHECK(comesg_building_send(b, &att, 1, 5000) == 0, "send the built message with a handle");
    comesg_attach wider = {COMESG_KIND_CHANNEL, from_c, COMESG_SEND | COMESG_RECV};
    int rc = comesg_carrier_send_with(cout, "wider", 5, &wider, 1, 5000);
    CHECK(rc == -EACCES, "attach with a right this handle lacks: %d", rc);
    comesg_attach bad_kind = {99, from_c, COMESG_SEND};
    CHECK(comesg_carrier_send_with(cout, "kind", 4, &bad_kind, 1, 5000) == -EINVAL, "an unknown kind");
    comesg_conn *conn2 = NULL;
    comesg_channel *elsewhere = NULL;
    CHECK(comesg_connect(argv[1], &conn2) == 0, "a second connection");
    CHECK(comesg_channel_open(conn2, path("from_c"), COMESG_SEND, &elsewhere) == 0, "open through it");
    comesg_attach foreign = {COMESG_KIND_CHANNEL, elsewhere, COMESG_SEND};
    CHECK(comesg_carrier_send_with(cout, "foreign", 7, &foreign, 1, 5000) == -EINVAL, "a port of another connection");
    comesg_channel_close(elsewhere);
    comesg_disconnect(conn2);
    CHECK(comesg_carrier_build(cout, 1 << 20, &b) == -EMSGSIZE, "a message over the carrier's limit");
    say("built");

    /* A handle coming the other way, in a message read in place. */
    comesg_message *cm = NULL;
    CHECK(comesg_carrier_recv_in_place(cin, 5000, &cm) == 0, "receive a carrier message in place");
    data = comesg_message_data(cm, &len);
    CHECK(len == 9 && memcmp(data, "take this", 9) == 0, "the carrier message in place (%zu bytes)", len);
    CHECK(comesg_message_attached(cm) == 1, "one handle attached");
    comesg_handle *h[2] = {NULL, NULL};
    CHECK(comesg_message_take_handles(cm, h, 2) == 1, "take the handle");
    CHECK(comesg_message_take_handles(cm, h + 1, 1) == 0, "a second take gets none");
    comesg_message_release(cm);
    CHECK(comesg_handle_kind(h[0]) == COMESG_KIND_CHANNEL, "a channel handle");
    comesg_pipe *not_a_pipe = NULL;
    CHECK(comesg_handle_into_pipe(h[0], &not_a_pipe) == -EPROTOTYPE, "a channel is not a pipe");
    comesg_channel *passed = NULL;
    CHECK(comesg_handle_into_channel(h[0], &passed) == 0, "the handle as a channel");
    n = comesg_channel_recv(passed, buf, sizeof buf, 5000);
    CHECK(n == 21 && memcmp(buf, "for the passed handle", 21) == 0, "receive through the passed handle");
    CHECK(comesg_channel_send(passed, "x", 1, 0) == -EPERM, "the passed handle has RECV only");
    comesg_channel_close(passed);
    say("handles ok");

    /* One thread waiting on several ports of different kinds. */
    comesg_poll *set = NULL;
    CHECK(comesg_poll_new(&set) == 0, "a poll set");
    CHECK(comesg_poll_add(set, COMESG_KIND_CHANNEL, to_c, 1, COMESG_READABLE) == 0, "poll the channel");
    CHECK(comesg_poll_add(set, COMESG_KIND_CARRIER, cin, 2, COMESG_READABLE) == 0, "poll the carrier");
    CHECK(comesg_poll_add(set, COMESG_KIND_PIPE, pipe, 3, COMESG_READABLE) == 0, "poll the pipe");
    CHECK(comesg_poll_add(set, COMESG_KIND_CHANNEL, to_c, 1, COMESG_READABLE) == -EEXIST, "a token twice");
    CHECK(comesg_poll_add(set, COMESG_KIND_CHANNEL, to_c, 4, 0) == -EINVAL, "no interest");
    comesg_event ev[4];
    CHECK(comesg_poll_wait(set, ev, 4, 0) == 0, "nothing is ready yet");
    say("polling");
    n = comesg_poll_wait(set, ev, 4, 10000);
    CHECK(n == 1 && ev[0].token == 2 && (ev[0].flags & COMESG_READABLE), "the carrier is ready (%lld)", (long long)n);
    n = comesg_carrier_recv(cin, buf, sizeof buf, 0);
    CHECK(n == 4 && memcmp(buf, "poke", 4) == 0, "the carrier's message");
    say("poked");
    n = comesg_poll_wait(set, ev, 1, 10000);
    CHECK(n == 1 && ev[0].token == 1 && (ev[0].flags & COMESG_READABLE), "the channel is ready (%lld)", (long long)n);
    n = comesg_channel_recv(to_c, buf, sizeof buf, 0);
    CHECK(n == 5 && memcmp(buf, "poke2", 5) == 0, "the channel's message");
    CHECK(comesg_poll_remove(set, 3) == 0, "remove the pipe");
    CHECK(comesg_poll_remove(set, 3) == -ENOENT, "remove it twice");
    comesg_poll_free(set);
    say("poll ok");

    /* Providing a service that the Rust process calls. */
    comesg_provider *prov = NULL;
    CHECK(comesg_serve(conn, path("reverse"), 2, 256, reverse, NULL, &prov) == 0, "serve");
    comesg_provider *none_prov = NULL;
    CHECK(comesg_serve(conn, path("reverse2"), 1, 256, NULL, NULL, &none_prov) == -EINVAL, "serve without a handler");
    CHECK(none_prov == NULL, "a failed call leaves the out-pointer alone");
    CHECK(comesg_serve(conn, path("reverse3"), 1, 256, reverse, NULL, NULL) == -EINVAL, "serve without an out-pointer");
    say("serving");
    expect_line("stop");
    CHECK(comesg_provider_stop(prov) == 0, "stop serving");

    /* Comutex: held here while the Rust side tries it. */
    comesg_mutex *m = NULL;
    CHECK(comesg_mutex_open(conn, path("lock"), &m) == 0, "open the comutex");
    CHECK(comesg_mutex_unlock(m) == -EPERM, "unlock before lock");
    CHECK(comesg_mutex_lock(m, 5000) == 0, "lock");
    CHECK(comesg_mutex_lock(m, 0) == -EDEADLK, "lock twice");
    pthread_t other;
    int other_rc = 0;
    CHECK(pthread_create(&other, NULL, unlock_elsewhere, m) == 0, "start a thread");
    CHECK(pthread_join(other, NULL) == 0, "join the thread");
    other_rc = unlock_elsewhere_rc;
    CHECK(other_rc == -EPERM, "unlock from another thread: %d", other_rc);
    say("locked");
    expect_line("unlock");
    CHECK(comesg_mutex_unlock(m) == 0, "unlock");
    say("unlocked");

    comesg_channel_close(to_c);
    comesg_channel_close(from_c);
    comesg_channel_close(ping);
    comesg_channel_close(pong);
    comesg_service_close(upper);
    comesg_pipe_close(pipe);
    comesg_carrier_close(cin);
    comesg_carrier_close(cout);
    comesg_mutex_close(m);
    comesg_channel_close(NULL);
    comesg_disconnect(conn);
    say("all ok");
    return 0;
}
