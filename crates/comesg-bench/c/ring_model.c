/*
 * A C model of the COCHANNEL ring protocol, for calibrating the Rust data
 * path on a given machine: two pinned threads, a 64-byte round trip
 * through two rings, interleaved with a raw spin ping-pong; prints the
 * median per-round ratio (ring / spin).
 *
 * Per slot, as in the ring: a header line (stamp, length), a data line, a
 * claim word (compare-and-swap by the sender) and a free stamp
 * (compare-and-swap by the receiver, then released for the next lap).
 * Senders learn up to a cache line of free stamps at a time; receivers
 * prefetch the data line while they poll the header. None of the ring's
 * rights, crash repair, sleeping or statistics.
 *
 *   gcc -O2 -pthread ring_model.c -o ring_model && ./ring_model
 *   ./ring_model CLAIM_CAS FREE_CAS PREFETCH HINT   (each 0 or 1; default 1 1 1 1)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 64
#define LINE 64

typedef struct {
    _Alignas(LINE) _Atomic uint64_t tail;
    _Alignas(LINE) _Atomic uint64_t head;
    _Alignas(LINE) _Atomic uint64_t claim[SLOTS];
    _Alignas(LINE) _Atomic uint64_t freew[SLOTS];
    _Alignas(LINE) struct {
        _Atomic uint64_t stamp;
        uint32_t len;
        char pad[LINE - 12];
    } hdr[SLOTS];
    _Alignas(LINE) char data[SLOTS][LINE];
    _Alignas(LINE) uint64_t hint_end; /* sender-local: known free below this */
} ring_t;

static int claim_cas = 1, free_cas = 1, prefetch = 1, hint = 1;

static void ring_init(ring_t *r) {
    memset(r, 0, sizeof *r);
    for (int i = 0; i < SLOTS; i++) r->freew[i] = i;
}

static void ring_send(ring_t *r, const char *m) {
    uint64_t p = atomic_load_explicit(&r->tail, memory_order_relaxed);
    int i = p % SLOTS;
    if (!(hint && p < r->hint_end)) {
        while (atomic_load_explicit(&r->freew[i], memory_order_acquire) != p) __builtin_ia32_pause();
        uint64_t e = p + 1;
        while (hint && e % 8 != 0 && atomic_load_explicit(&r->freew[e % SLOTS], memory_order_relaxed) == e) e++;
        r->hint_end = e;
    }
    if (claim_cas) {
        uint64_t c = r->claim[i];
        atomic_compare_exchange_strong(&r->claim[i], &c, p | 1ull << 63);
    } else {
        atomic_store_explicit(&r->claim[i], p | 1ull << 63, memory_order_relaxed);
    }
    atomic_store_explicit(&r->tail, p + 1, memory_order_release);
    memcpy(r->data[i], m, LINE);
    r->hdr[i].len = LINE;
    atomic_store_explicit(&r->hdr[i].stamp, p + 1, memory_order_release);
}

static void ring_recv(ring_t *r, char *m) {
    uint64_t p = atomic_load_explicit(&r->head, memory_order_relaxed);
    int i = p % SLOTS, n = 0;
    while (atomic_load_explicit(&r->hdr[i].stamp, memory_order_acquire) != p + 1) {
        if (prefetch && ++n >= 8) __builtin_prefetch(r->data[i]);
    }
    if (free_cas) {
        uint64_t f = p;
        atomic_compare_exchange_strong(&r->freew[i], &f, 1ull << 63);
    } else {
        atomic_store_explicit(&r->freew[i], 1ull << 63, memory_order_relaxed);
    }
    atomic_store_explicit(&r->head, p + 1, memory_order_release);
    memcpy(m, r->data[i], LINE);
    atomic_store_explicit(&r->freew[i], p + SLOTS, memory_order_release);
}

static ring_t *ping, *pong;
static _Alignas(LINE) _Atomic uint64_t flag_a;
static _Alignas(LINE) _Atomic uint64_t flag_b;
static int mode; /* 0 spin, 1 ring, -1 exit */
static const long N = 200000;
static pthread_barrier_t bar;

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

static void *peer(void *arg) {
    pin(*(int *)arg);
    char m[LINE];
    for (;;) {
        pthread_barrier_wait(&bar);
        if (mode < 0) return 0;
        for (long i = 1; i <= N; i++) {
            if (mode == 0) {
                while (atomic_load_explicit(&flag_a, memory_order_acquire) < (uint64_t)i) {}
                atomic_store_explicit(&flag_b, i, memory_order_release);
            } else {
                ring_recv(ping, m);
                ring_send(pong, m);
            }
        }
        pthread_barrier_wait(&bar);
    }
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static double round_trips(int md) {
    mode = md;
    flag_a = flag_b = 0;
    ring_init(ping);
    ring_init(pong);
    pthread_barrier_wait(&bar);
    char m[LINE] = {1};
    double t = now_ns();
    for (long i = 1; i <= N; i++) {
        if (md == 0) {
            atomic_store_explicit(&flag_a, i, memory_order_release);
            while (atomic_load_explicit(&flag_b, memory_order_acquire) < (uint64_t)i) {}
        } else {
            ring_send(ping, m);
            ring_recv(pong, m);
        }
    }
    double d = (now_ns() - t) / N;
    pthread_barrier_wait(&bar);
    return d;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc > 4) {
        claim_cas = atoi(argv[1]);
        free_cas = atoi(argv[2]);
        prefetch = atoi(argv[3]);
        hint = atoi(argv[4]);
    }
    size_t len = (sizeof(ring_t) + 4095) / 4096 * 4096;
    ping = aligned_alloc(4096, len);
    pong = aligned_alloc(4096, len);
    pthread_barrier_init(&bar, 0, 2);
    int cpu1 = 1;
    pthread_t t;
    pthread_create(&t, 0, peer, &cpu1);
    pin(0);
    enum { ROUNDS = 9 };
    double ratio[ROUNDS], spin[ROUNDS], ring[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        spin[r] = round_trips(0);
        ring[r] = round_trips(1);
        ratio[r] = ring[r] / spin[r];
    }
    qsort(ratio, ROUNDS, sizeof(double), by_value);
    qsort(spin, ROUNDS, sizeof(double), by_value);
    qsort(ring, ROUNDS, sizeof(double), by_value);
    printf("claim_cas=%d free_cas=%d prefetch=%d hint=%d: spin median %.0f ns, ring median %.0f ns, "
           "ring/spin per-round median %.2fx (min %.2fx)\n",
           claim_cas, free_cas, prefetch, hint, spin[ROUNDS / 2], ring[ROUNDS / 2], ratio[ROUNDS / 2], ratio[0]);
    mode = -1;
    pthread_barrier_wait(&bar);
    pthread_join(t, 0);
    return 0;
}
