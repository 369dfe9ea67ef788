/* Transactional against idempotent produce on librdkafka's C API, several producers at once, so
 * the Python client's own cost per transaction (bench/txn_bench.py) is out of the measurement.
 * Each producer is a thread with its own rd_kafka_t and its own topic (PREFIX-0, PREFIX-1, ...,
 * created beforehand with one partition). Prints one JSON line (with every commit's latency).
 * bench/txn_bench.py --client native builds and runs it.
 * Build: cc -O2 -pthread -o txn_native bench/txn_native.c -lrdkafka
 * Usage: txn_native BOOTSTRAP PREFIX idempotent|transactional PRODUCERS MESSAGES PER_TXN SIZE
 *   MESSAGES is per producer; PER_TXN is ignored by the idempotent run. */
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *bootstrap, *prefix;
static int transactional;
static long messages, per_txn;
static size_t size;
static char *payload;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void set(rd_kafka_conf_t *c, const char *k, const char *v) {
    char err[512];
    if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s: %s\n", k, err);
        exit(2);
    }
}

static void check(rd_kafka_error_t *e, const char *what) {
    if (e) {
        fprintf(stderr, "%s: %s\n", what, rd_kafka_error_string(e));
        exit(1);
    }
}

struct job {
    int id;
    long failed;
    double start, end;
    double *commits; /* seconds per commit_transaction() */
    long n_commits;
    pthread_barrier_t *ready;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) ((struct job *)m->_private)->failed++;
}

static void produce(rd_kafka_t *p, rd_kafka_topic_t *t, struct job *j) {
    while (rd_kafka_produce(t, 0, RD_KAFKA_MSG_F_COPY, payload, size, NULL, 0, j) == -1)
        rd_kafka_poll(p, 1);
}

static void *run(void *arg) {
    struct job *j = arg;
    char err[512], name[256], id[64];
    snprintf(name, sizeof name, "%s-%d", prefix, j->id);
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    set(c, "bootstrap.servers", bootstrap);
    set(c, "linger.ms", "5");
    set(c, "batch.num.messages", "10000");
    set(c, "acks", "all");
    if (transactional) {
        snprintf(id, sizeof id, "%s-txn-%d", prefix, j->id);
        set(c, "transactional.id", id);
    } else {
        set(c, "enable.idempotence", "true");
    }
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
    if (!p) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    rd_kafka_topic_t *t = rd_kafka_topic_new(p, name, NULL);
    /* Warm up: the producer id and the connection, before the clock starts. */
    if (transactional) {
        check(rd_kafka_init_transactions(p, 30000), "init_transactions");
    } else {
        produce(p, t, j);
        rd_kafka_flush(p, 30000);
    }
    pthread_barrier_wait(j->ready);
    j->start = now_s();
    if (transactional) {
        j->commits = malloc(sizeof(double) * (messages / per_txn + 1));
        for (long sent = 0; sent < messages;) {
            check(rd_kafka_begin_transaction(p), "begin_transaction");
            for (long i = 0; i < per_txn && sent < messages; i++, sent++) {
                produce(p, t, j);
                if ((i & 1023) == 0) rd_kafka_poll(p, 0);
            }
            double c0 = now_s();
            check(rd_kafka_commit_transaction(p, 60000), "commit_transaction");
            j->commits[j->n_commits++] = now_s() - c0;
        }
    } else {
        for (long i = 0; i < messages; i++) {
            produce(p, t, j);
            if ((i & 1023) == 0) rd_kafka_poll(p, 0);
        }
        rd_kafka_flush(p, 300000);
    }
    j->end = now_s();
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(p);
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr,
                "usage: %s BOOTSTRAP PREFIX idempotent|transactional PRODUCERS MESSAGES PER_TXN SIZE\n",
                argv[0]);
        return 2;
    }
    bootstrap = argv[1];
    prefix = argv[2];
    transactional = strcmp(argv[3], "transactional") == 0;
    int producers = atoi(argv[4]);
    messages = atol(argv[5]);
    per_txn = atol(argv[6]);
    size = (size_t)atol(argv[7]);
    if (producers < 1 || messages < 1 || per_txn < 1) return 2;
    payload = malloc(size);
    memset(payload, 'x', size);

    pthread_barrier_t ready;
    pthread_barrier_init(&ready, NULL, producers);
    struct job *jobs = calloc(producers, sizeof *jobs);
    pthread_t *threads = calloc(producers, sizeof *threads);
    for (int i = 0; i < producers; i++) {
        jobs[i].id = i;
        jobs[i].ready = &ready;
        pthread_create(&threads[i], NULL, run, &jobs[i]);
    }
    long failed = 0, n_commits = 0;
    double start = 1e300, end = 0;
    for (int i = 0; i < producers; i++) {
        pthread_join(threads[i], NULL);
        failed += jobs[i].failed;
        n_commits += jobs[i].n_commits;
        if (jobs[i].start < start) start = jobs[i].start;
        if (jobs[i].end > end) end = jobs[i].end;
    }
    double *all = malloc(sizeof(double) * (n_commits + 1));
    long k = 0;
    for (int i = 0; i < producers; i++)
        for (long c = 0; c < jobs[i].n_commits; c++) all[k++] = jobs[i].commits[c];
    qsort(all, k, sizeof(double), by_value);
    double p50 = k ? all[k / 2] * 1e3 : 0, p99 = k ? all[(k * 99) / 100] * 1e3 : 0;
    long total = messages * producers;
    printf("{\"client\": \"librdkafka %s (C)\", \"mode\": \"%s\", \"producers\": %d, \"messages\": %ld, "
           "\"per_txn\": %ld, \"seconds\": %.3f, \"msgs_s\": %.0f, \"failed\": %ld, \"commits\": %ld, "
           "\"commit_p50_ms\": %.2f, \"commit_p99_ms\": %.2f, \"commit_ms\": [",
           rd_kafka_version_str(), argv[3], producers, total, transactional ? per_txn : 0, end - start,
           total / (end - start), failed, n_commits, p50, p99);
    for (long i = 0; i < k; i++) printf("%s%.3f", i ? "," : "", all[i] * 1e3);
    printf("]}\n");
    return failed ? 1 : 0;
}
