/* Native-client benchmark for Sluice on librdkafka's C API (the engine under kcat, confluent-kafka,
 * rdkafka-rs...): produce N messages with acks=all, linger.ms=5, 1 MB batches, then consume them
 * back from offset 0. Prints one JSON line. The broker must already run.
 * Build: cc -O2 -o native bench/native.c -lrdkafka
 * Usage: native BOOTSTRAP TOPIC MESSAGES SIZE */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long delivered, failed;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk; (void)opaque;
    if (m->err) failed++; else delivered++;
}

static rd_kafka_conf_t *conf_new(const char *bootstrap) {
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s\n", err);
        exit(2);
    }
    /* RDKAFKA_CONF="k=v;k=v": extra client settings (e.g. security.protocol=SASL_SSL;...). */
    const char *extra = getenv("RDKAFKA_CONF");
    if (extra) {
        char *copy = strdup(extra), *save = NULL;
        for (char *kv = strtok_r(copy, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
            char *eq = strchr(kv, '=');
            if (!eq) { fprintf(stderr, "RDKAFKA_CONF: '%s' is not k=v\n", kv); exit(2); }
            *eq = 0;
            if (rd_kafka_conf_set(c, kv, eq + 1, err, sizeof err) != RD_KAFKA_CONF_OK) {
                fprintf(stderr, "%s: %s\n", kv, err);
                exit(2);
            }
        }
        free(copy);
    }
    return c;
}

static void set(rd_kafka_conf_t *c, const char *k, const char *v) {
    char err[512];
    if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s: %s\n", k, err);
        exit(2);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC MESSAGES SIZE\n", argv[0]);
        return 2;
    }
    const char *bootstrap = argv[1], *topic = argv[2];
    long n = atol(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    char err[512];
    char *payload = malloc(size);
    for (size_t i = 0; i < size; i++) payload[i] = (char)('a' + i % 26);

    rd_kafka_conf_t *pc = conf_new(bootstrap);
    set(pc, "acks", "all");
    set(pc, "linger.ms", "5");
    set(pc, "batch.size", "1000000");
    set(pc, "queue.buffering.max.messages", "2000000");
    set(pc, "queue.buffering.max.kbytes", "2000000");
    set(pc, "enable.idempotence", "false");
    rd_kafka_conf_set_dr_msg_cb(pc, dr_cb);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof err);
    if (!p) { fprintf(stderr, "%s\n", err); return 1; }
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                                 RD_KAFKA_V_VALUE(payload, size), RD_KAFKA_V_END) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(p, 1);
        if ((i & 1023) == 0) rd_kafka_poll(p, 0);
    }
    rd_kafka_flush(p, 300000);
    double produce_s = now_s() - t0;
    rd_kafka_destroy(p);
    if (failed || delivered != n) {
        fprintf(stderr, "delivered %ld failed %ld of %ld\n", delivered, failed, n);
        return 1;
    }

    rd_kafka_conf_t *cc = conf_new(bootstrap);
    set(cc, "group.id", "native-bench");
    set(cc, "enable.auto.commit", "false");
    set(cc, "fetch.max.bytes", "52428800");
    set(cc, "max.partition.fetch.bytes", "10485760");
    set(cc, "queued.max.messages.kbytes", "1048576");
    set(cc, "queued.min.messages", "10000000");
    if (getenv("FETCH_WAIT_MS")) set(cc, "fetch.wait.max.ms", getenv("FETCH_WAIT_MS"));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof err);
    if (!c) { fprintf(stderr, "%s\n", err); return 1; }
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tp, topic, 0)->offset = 0;
    rd_kafka_assign(c, tp);
    long got = 0;
    /* Timed from the first message, so connection set-up is not counted. */
    t0 = 0;
    while (got < n) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 5000);
        if (!m) break;
        if (!m->err) {
            if (got++ == 0) t0 = now_s();
        }
        rd_kafka_message_destroy(m);
    }
    double consume_s = now_s() - t0;
    rd_kafka_topic_partition_list_destroy(tp);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    printf("{\"client\": \"librdkafka %s (C)\", \"size\": %zu, \"messages\": %ld, \"produce_msgs_s\": %.0f, "
           "\"produce_MB_s\": %.1f, \"consumed\": %ld, \"consume_msgs_s\": %.0f, \"consume_MB_s\": %.1f}\n",
           rd_kafka_version_str(), size, n, n / produce_s, n * size / produce_s / 1e6, got, got / consume_s,
           got * size / consume_s / 1e6);
    return got == n ? 0 : 1;
}
