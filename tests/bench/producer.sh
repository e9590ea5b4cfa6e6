#!/usr/bin/env bash
# Producer throughput benchmark (not a timed test), one command:
#
#   bash tests/bench/producer.sh              # 500,000 synthetic tweets
#   bash tests/bench/producer.sh 1000000
#
# Starts the test environment if needed (tests/env/up), builds the release
# producer, writes N synthetic tweets with the producer's own generator
# (`twitterstream-producer dump-synthetic`, seed 1) to a key<TAB>value file,
# then, against the same broker in the same run and into fresh 3-partition
# topics:
#   1. kcat -P -b $KAFKA_BROKERS -t <topic> -K '\t' -l <file>   (librdkafka defaults)
#   1b. the same with the producer's delivery settings: lz4, idempotence, acks=all
#      (same compression and guarantees, minus transactions)
#   1c. 1b plus the five headers the producer stamps on every record (stream,
#      keyword, source, ingested_at, seq; static values here, same sizes):
#      the fair reference. librdkafka allocates, writes and frees each header
#      separately: they add about two thirds to kcat's CPU per record.
#   2. twitterstream-producer --source synthetic --synthetic-rate 0
#      --synthetic-count N, timed from process start to exit: connecting,
#      init_transactions (fencing), the resume read-back of the topic,
#      generating the tweets (on their own thread) and publishing them with
#      an idempotent transactional producer (acks=all, lz4, five headers per
#      record, unpaced transactions of up to 500k records / 5 s, each
#      committed), and exit.
#      kcat sends no headers and has no transactions or start-up read-back.
# and prints tweets/s and MB/s of both and their ratio (target >= 0.9x).
# Both topics are counted afterwards (the producer's with read_committed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
count=${1:-500000}
partitions=3
env_exports=$(tests/env/up) # an assignment, so a failed start stops the script (eval "$(...)" would not)
eval "$env_exports"
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p twitterstream-workers --bin twitterstream-producer
bin="$target/release/twitterstream-producer"
command -v kcat >/dev/null || { echo "kcat is missing (tests/env/build installs it)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Topics are created with Kafka's own Admin client (the broker has
# auto-creation off and ships no CLI scripts here).
source tests/env/lib.sh
libs=$(kafka_lib_dir) # the jars of the broker tests/env/up runs
cat >"$work/CreateTopics.java" <<'EOF'
import java.util.*;
import org.apache.kafka.clients.admin.*;
public class CreateTopics {
    public static void main(String[] a) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", a[0]);
        try (Admin admin = Admin.create(p)) {
            List<NewTopic> ts = new ArrayList<>();
            for (int i = 2; i < a.length; i++) ts.add(new NewTopic(a[i], Integer.parseInt(a[1]), (short) 1));
            admin.createTopics(ts).all().get();
        }
    }
}
EOF
suffix="$$-$(date +%s)"
t_kcat="bench-kcat-$suffix"
t_kcat_same="bench-kcat-lz4-$suffix"
t_kcat_hdr="bench-kcat-hdr-$suffix"
t_prod="bench-producer-$suffix"
java -cp "$libs/*" "$work/CreateTopics.java" "$KAFKA_BROKERS" "$partitions" "$t_kcat" "$t_kcat_same" "$t_kcat_hdr" "$t_prod" 2>/dev/null

echo "generating $count tweets ..." >&2
"$bin" dump-synthetic --seed 1 --count "$count" >"$work/tweets.tsv"
bytes=$(stat -c %s "$work/tweets.tsv")

now() { date +%s.%N; }

echo "kcat ..." >&2
s=$(now)
kcat -P -b "$KAFKA_BROKERS" -t "$t_kcat" -K $'\t' -l "$work/tweets.tsv"
kcat_s=$(echo "$(now) - $s" | bc -l)

echo "kcat (lz4, idempotent, acks=all) ..." >&2
s=$(now)
kcat -P -b "$KAFKA_BROKERS" -t "$t_kcat_same" -K $'\t' -l "$work/tweets.tsv" \
  -X compression.codec=lz4 -X enable.idempotence=true -X acks=all
same_s=$(echo "$(now) - $s" | bc -l)

echo "kcat (lz4, idempotent, acks=all, five headers) ..." >&2
s=$(now)
kcat -P -b "$KAFKA_BROKERS" -t "$t_kcat_hdr" -K $'\t' -l "$work/tweets.tsv" \
  -X compression.codec=lz4 -X enable.idempotence=true -X acks=all \
  -H stream=bench -H keyword= -H source=synthetic \
  -H ingested_at="$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" -H seq="$((count / 2))"
hdr_s=$(echo "$(now) - $s" | bc -l)

echo "twitterstream-producer ..." >&2
s=$(now)
RUST_LOG=warn "$bin" --source synthetic --seed 1 --synthetic-rate 0 --synthetic-count "$count" \
    --brokers "$KAFKA_BROKERS" --topic "$t_prod" --stream-name bench \
    --http-addr 127.0.0.1:0
prod_s=$(echo "$(now) - $s" | bc -l)

n_kcat=$(kcat -C -b "$KAFKA_BROKERS" -t "$t_kcat" -e -q -f '\n' | wc -l)
n_same=$(kcat -C -b "$KAFKA_BROKERS" -t "$t_kcat_same" -e -q -f '\n' | wc -l)
n_hdr=$(kcat -C -b "$KAFKA_BROKERS" -t "$t_kcat_hdr" -e -q -f '\n' | wc -l)
n_prod=$(kcat -C -b "$KAFKA_BROKERS" -t "$t_prod" -e -q -X isolation.level=read_committed -f '\n' | wc -l)

awk -v n="$count" -v b="$bytes" -v k="$kcat_s" -v k2="$same_s" -v k3="$hdr_s" -v p="$prod_s" -v nk="$n_kcat" -v n2="$n_same" -v n3="$n_hdr" -v np="$n_prod" 'BEGIN {
    printf "records: %d (%.1f MB as key<TAB>value lines, avg %.0f B)\n", n, b / 1e6, b / n
    printf "kcat -P:                %8.2f s %10.0f tweets/s %7.1f MB/s (topic holds %d)\n", k, n / k, b / 1e6 / k, nk
    printf "kcat -P lz4+idempotent: %8.2f s %10.0f tweets/s %7.1f MB/s (topic holds %d)\n", k2, n / k2, b / 1e6 / k2, n2
    printf "  + the 5 headers:      %8.2f s %10.0f tweets/s %7.1f MB/s (topic holds %d)\n", k3, n / k3, b / 1e6 / k3, n3
    printf "twitterstream-producer: %8.2f s %10.0f tweets/s %7.1f MB/s (topic holds %d, read_committed)\n", p, n / p, b / 1e6 / p, np
    printf "ratio producer/kcat:    %.2fx (target >= 0.9x); against kcat with the same settings: %.2fx; and the same headers: %.2fx\n", k / p, k2 / p, k3 / p
}'
