#!/usr/bin/env bash
# Producer throughput benchmark (not a timed test), one command:
#
#   bash tests/bench/producer.sh              # 500,000 synthetic tweets, 3 rounds
#   bash tests/bench/producer.sh 1000000 5    # 1,000,000 tweets, 5 rounds
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
# The four run in turn, in each of several rounds (each run into a fresh
# topic), and the median time of each counts. Prints tweets/s and MB/s and
# the ratios (target >= 0.9x). Every topic is counted afterwards (the
# producer's with read_committed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
count=${1:-500000}
rounds=${2:-3}
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
echo "generating $count tweets ..." >&2
"$bin" dump-synthetic --seed 1 --count "$count" >"$work/tweets.tsv"
bytes=$(stat -c %s "$work/tweets.tsv")

now() { date +%s.%N; }
# Seconds since $1, to the millisecond.
since() { echo "$(now) - $1" | bc -l | xargs printf '%.3f'; }
# Records in a topic (the producer's read with read_committed).
count_topic() { kcat -C -b "$KAFKA_BROKERS" -t "$1" -e -q "${@:2}" -f '\n' | wc -l; }
hdrs=(-H stream=bench -H keyword= -H source=synthetic
  -H ingested_at="$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" -H seq="$((count / 2))")

# One round runs the four in turn, each into a fresh topic. Single runs on
# this kind of machine vary by half or more from one to the next, so the
# rounds interleave the four and the medians count.
declare -A runs held
for round in $(seq "$rounds"); do
  suffix="$$-$(date +%s)-$round"
  java -cp "$libs/*" "$work/CreateTopics.java" "$KAFKA_BROKERS" "$partitions" \
    "bench-kcat-$suffix" "bench-kcat-lz4-$suffix" "bench-kcat-hdr-$suffix" "bench-producer-$suffix" 2>/dev/null
  echo "round $round of $rounds ..." >&2

  s=$(now)
  kcat -P -b "$KAFKA_BROKERS" -t "bench-kcat-$suffix" -K $'\t' -l "$work/tweets.tsv"
  runs[kcat]+=" $(since "$s")"

  s=$(now)
  kcat -P -b "$KAFKA_BROKERS" -t "bench-kcat-lz4-$suffix" -K $'\t' -l "$work/tweets.tsv" \
    -X compression.codec=lz4 -X enable.idempotence=true -X acks=all
  runs[same]+=" $(since "$s")"

  s=$(now)
  kcat -P -b "$KAFKA_BROKERS" -t "bench-kcat-hdr-$suffix" -K $'\t' -l "$work/tweets.tsv" \
    -X compression.codec=lz4 -X enable.idempotence=true -X acks=all "${hdrs[@]}"
  runs[hdr]+=" $(since "$s")"

  s=$(now)
  RUST_LOG=warn "$bin" --source synthetic --seed 1 --synthetic-rate 0 --synthetic-count "$count" \
    --brokers "$KAFKA_BROKERS" --topic "bench-producer-$suffix" --stream-name "bench-$round" \
    --http-addr 127.0.0.1:0 --exit-when-done
  runs[prod]+=" $(since "$s")"

  held[kcat]+=" $(count_topic "bench-kcat-$suffix")"
  held[same]+=" $(count_topic "bench-kcat-lz4-$suffix")"
  held[hdr]+=" $(count_topic "bench-kcat-hdr-$suffix")"
  held[prod]+=" $(count_topic "bench-producer-$suffix" -X isolation.level=read_committed)"
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
awk -v n="$count" -v b="$bytes" -v rounds="$rounds" \
  -v k="$(median "${runs[kcat]}")" -v k2="$(median "${runs[same]}")" -v k3="$(median "${runs[hdr]}")" -v p="$(median "${runs[prod]}")" \
  -v rk="${runs[kcat]}" -v r2="${runs[same]}" -v r3="${runs[hdr]}" -v rp="${runs[prod]}" \
  -v nk="${held[kcat]}" -v n2="${held[same]}" -v n3="${held[hdr]}" -v np="${held[prod]}" 'BEGIN {
    printf "records: %d (%.1f MB as key<TAB>value lines, avg %.0f B); medians of %d rounds\n", n, b / 1e6, b / n, rounds
    printf "kcat -P:                %8.2f s %10.0f tweets/s %7.1f MB/s  runs (s):%s  topics hold:%s\n", k, n / k, b / 1e6 / k, rk, nk
    printf "kcat -P lz4+idempotent: %8.2f s %10.0f tweets/s %7.1f MB/s  runs (s):%s  topics hold:%s\n", k2, n / k2, b / 1e6 / k2, r2, n2
    printf "  + the 5 headers:      %8.2f s %10.0f tweets/s %7.1f MB/s  runs (s):%s  topics hold:%s\n", k3, n / k3, b / 1e6 / k3, r3, n3
    printf "twitterstream-producer: %8.2f s %10.0f tweets/s %7.1f MB/s  runs (s):%s  topics hold (read_committed):%s\n", p, n / p, b / 1e6 / p, rp, np
    printf "ratio producer/kcat:    %.2fx (target >= 0.9x); against kcat with the same settings: %.2fx; and the same headers: %.2fx\n", k / p, k2 / p, k3 / p
}'
