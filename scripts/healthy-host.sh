#!/usr/bin/env bash
# healthy-host.sh: measure false alarms of a host-wide `stallwatch watch` on a busy, healthy
# host (issue 10: "a host-wide watch on a busy but healthy server reports no problem verdict").
#
# Sets up on this machine: PostgreSQL with a rate-limited pgbench and a psql loop, a private
# redis-server with a pub/sub subscriber and publisher, a BLPOP worker and its producer, nginx
# with a curl loop, a JVM with idle and scheduled executors, a Node http server, a Python
# http.server with an idle ThreadPoolExecutor, a `tail -f | grep` pipeline, a `while read`
# loop on a FIFO, and an interactive bash on a pseudo-terminal. Then runs
# `stallwatch watch --threshold 5s -d 60s --json` host-wide, counts problem verdicts per
# verdict and process, and tears everything down (the services it started are stopped;
# installed packages stay).
#
# Usage (root): scripts/healthy-host.sh [STALLWATCH_BIN] [OUT_DIR]
#   STALLWATCH_BIN  default target/release/stallwatch (build it with `cargo xtask build`)
#   OUT_DIR         default /tmp/healthy-host: watch.jsonl, watch.swrec, summary.txt
# Environment: DURATION (default 60s), THRESHOLD (default 5s).
# Not part of CI: it installs packages and starts services.

set -euo pipefail

BIN=$(realpath "${1:-target/release/stallwatch}")
OUT=${2:-/tmp/healthy-host}
DURATION=${DURATION:-60s}
THRESHOLD=${THRESHOLD:-5s}
REDIS_PORT=6391
NGINX_PORT=8091
NODE_PORT=8092
PY_PORT=8093
WORK=$(mktemp -d /tmp/healthy-host-work.XXXXXX)
mkdir -p "$OUT"
PIDS=()
PG_STARTED=0

log() { echo "healthy-host: $*" >&2; }

# Starts "$@" in a session of its own (so it and its children can be stopped by its pid's
# process group) and remembers its pid.
start() {
    setsid "$@" >/dev/null 2>&1 < /dev/null &
    PIDS+=("$!")
}

teardown() {
    log "tearing down"
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 1
    for pid in "${PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [[ -f "$WORK/redis.pid" ]]; then kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true; fi
    if [[ -f "$WORK/nginx.pid" ]]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
    if [[ $PG_STARTED == 1 ]]; then pg_ctlcluster "$PG_VERSION" main stop || true; fi
    rm -rf "$WORK"
}
trap teardown EXIT

install_missing() {
    local missing=()
    command -v pg_ctlcluster >/dev/null || missing+=(postgresql postgresql-contrib)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v nginx >/dev/null || missing+=(nginx)
    command -v curl >/dev/null || missing+=(curl)
    command -v script >/dev/null || missing+=(bsdutils)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
    fi
    # Installing a service package starts it under systemd where there is one; the ones this
    # script starts are its own instances, on their own ports.
}

start_postgres() {
    PG_VERSION=$(pg_lsclusters -h | awk '$2 == "main" { print $1; exit }')
    if [[ -z $PG_VERSION ]]; then
        log "no PostgreSQL cluster"
        return
    fi
    if ! pg_lsclusters -h | awk '$2 == "main" { print $4 }' | grep -q online; then
        pg_ctlcluster "$PG_VERSION" main start
        PG_STARTED=1
    fi
    su postgres -c "psql -qc 'drop database if exists healthy' && createdb healthy && pgbench -qi -s 2 healthy" >/dev/null 2>&1
    # A rate-limited benchmark: clients idle between transactions, backends waiting on them.
    start su postgres -c "pgbench -c 4 -R 20 -T 3600 healthy"
    # A psql loop: a new connection every second.
    start su postgres -c "while :; do psql -qAtc 'select count(*) from pgbench_accounts' healthy; sleep 1; done"
    # An idle session: psql reading its queries from a FIFO, one every 7 s.
    mkfifo "$WORK/psql.fifo"
    start su postgres -c "psql -qAt healthy < $WORK/psql.fifo"
    start bash -c "exec 3>$WORK/psql.fifo; while :; do echo 'select now();' >&3; sleep 7; done"
}

start_redis() {
    redis-server --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes \
        --pidfile "$WORK/redis.pid" --dir "$WORK" >/dev/null
    sleep 0.5
    local cli="redis-cli -p $REDIS_PORT"
    start $cli subscribe news
    start bash -c "while :; do $cli publish news hello >/dev/null; sleep 3; done"
    # A queue worker in BLPOP, and its producer every 7 s.
    start bash -c "while :; do $cli blpop jobs 0 >/dev/null; done"
    start bash -c "while :; do sleep 7; $cli rpush jobs job >/dev/null; done"
}

start_nginx() {
    cat >"$WORK/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $WORK;
    proxy_temp_path $WORK;
    fastcgi_temp_path $WORK;
    uwsgi_temp_path $WORK;
    scgi_temp_path $WORK;
    server { listen 127.0.0.1:$NGINX_PORT; location / { return 200 "ok\n"; } }
}
EOF
    nginx -c "$WORK/nginx.conf"
    start bash -c "while :; do curl -s http://127.0.0.1:$NGINX_PORT/ >/dev/null; sleep 0.5; done"
}

start_jvm() {
    cat >"$WORK/IdleExecutors.java" <<'EOF'
import java.util.concurrent.*;

public class IdleExecutors {
    public static void main(String[] args) throws Exception {
        ExecutorService idle = Executors.newFixedThreadPool(4);
        for (int i = 0; i < 4; i++) idle.submit(() -> {});
        ScheduledExecutorService timer = Executors.newScheduledThreadPool(2);
        timer.scheduleAtFixedRate(() -> {}, 0, 2, TimeUnit.SECONDS);
        BlockingQueue<String> queue = new LinkedBlockingQueue<>();
        Thread consumer = new Thread(() -> {
            try { while (true) queue.take(); } catch (InterruptedException e) { }
        }, "consumer");
        consumer.start();
        timer.scheduleAtFixedRate(() -> queue.add("tick"), 0, 9, TimeUnit.SECONDS);
        Thread.currentThread().join();
    }
}
EOF
    start java "$WORK/IdleExecutors.java"
}

start_node() {
    cat >"$WORK/server.js" <<EOF
const http = require('http');
http.createServer((req, res) => res.end('ok\n')).listen($NODE_PORT, '127.0.0.1');
setInterval(() => http.get('http://127.0.0.1:$NODE_PORT/', r => r.resume()), 2000);
EOF
    start node "$WORK/server.js"
}

start_python() {
    cat >"$WORK/service.py" <<'EOF'
import concurrent.futures, http.server, sys, threading, time, urllib.request

port = int(sys.argv[1])
pool = concurrent.futures.ThreadPoolExecutor(4)
for _ in range(4):
    pool.submit(time.sleep, 0.1)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()
while True:
    time.sleep(3)
    urllib.request.urlopen(f"http://127.0.0.1:{port}/").read()
EOF
    (cd "$WORK" && start python3 "$WORK/service.py" "$PY_PORT")
}

start_shells() {
    touch "$WORK/app.log"
    start bash -c "tail -f $WORK/app.log | grep --line-buffered ERROR > /dev/null"
    start bash -c "while :; do echo \"\$(date) INFO ok\" >> $WORK/app.log; sleep 4; done"
    mkfifo "$WORK/lines.fifo"
    start bash -c "while :; do while read -r line; do :; done < $WORK/lines.fifo; done"
    start bash -c "exec 3>$WORK/lines.fifo; while :; do echo line >&3; sleep 4; done"
    # An interactive bash waiting on a terminal: `script` gives it a pseudo-terminal; its own
    # stdin is a pipe from a sleeping writer.
    start bash -c "sleep 100000 | script -qfc 'bash -i' /dev/null"
}

summarize() {
    local json=$1
    python3 - "$json" <<'EOF'
import collections, json, sys

counts = collections.Counter()
examples = {}
reports = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in reports:
    if r.get("restated"):
        continue
    for t in r["threads"]:
        if t["verdict"] == "idle":
            continue
        key = (t["verdict"], t.get("process_name") or t["comm"])
        counts[key] += 1
        examples.setdefault(key, t["explanation"])
total = sum(counts.values())
print(f"problem verdicts: {total}")
for (verdict, process), n in counts.most_common():
    print(f"  {n:4} {verdict:20} {process}: {examples[(verdict, process)]}")
EOF
}

install_missing
log "starting the services"
start_postgres
start_redis
start_nginx
start_jvm
start_node
start_python
start_shells
log "letting them settle"
sleep 10
log "watch host-wide for $DURATION at threshold $THRESHOLD"
set +e
"$BIN" watch --threshold "$THRESHOLD" -d "$DURATION" --json -o "$OUT/watch.jsonl" \
    --record "$OUT/watch.swrec"
status=$?
set -e
{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  kernel: $(uname -r)  watch exit status: $status"
    echo "watch --threshold $THRESHOLD -d $DURATION (host-wide)"
    summarize "$OUT/watch.jsonl"
} | tee "$OUT/summary.txt"
