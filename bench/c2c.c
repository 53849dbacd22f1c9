/* c2c: round trip of one cache line between two cpus, in ns (median of 7 trials of
 * 100000 round trips). Used by bench/memif.sh before every run: memif is a ping-pong of
 * ring and buffer lines between the generator's and the DUT's cpus, so its rate follows
 * this latency, which in a VM depends on where the hypervisor put the two vCPUs.
 * Usage: c2c [CPU_A [CPU_B]]  (default 0 1). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Alignas(64) _Atomic long line;
static int cpu_b;
static long rounds;

static void pin(int cpu) {
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}
static void *pong(void *arg) {
    (void)arg; pin(cpu_b);
    for (long i = 0; i < rounds; i++) {
        while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 1) ;
        atomic_store_explicit(&line, 2 * i + 2, memory_order_release);
    }
    return NULL;
}
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return (x > y) - (x < y); }
int main(int argc, char **argv) {
    int cpu_a = argc > 1 ? atoi(argv[1]) : 0; cpu_b = argc > 2 ? atoi(argv[2]) : 1;
    rounds = 100000;
    double r[7];
    for (int t = 0; t < 7; t++) {
        atomic_store(&line, 0);
        pthread_t th; pthread_create(&th, NULL, pong, NULL);
        pin(cpu_a);
        /* the first 1000 round trips are warm-up (the peer gets onto its cpu) */
        double t0 = 0;
        for (long i = 0; i < rounds; i++) {
            if (i == 1000) t0 = now();
            atomic_store_explicit(&line, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 2) ;
        }
        r[t] = (now() - t0) / (rounds - 1000);
        pthread_join(th, NULL);
    }
    qsort(r, 7, sizeof r[0], cmp);
    printf("%.0f\n", r[3]);
    return 0;
}
