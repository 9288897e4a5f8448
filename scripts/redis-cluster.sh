#!/usr/bin/env bash
# A real Redis Cluster for the tests and the benchmark: 6 redis-server processes on free loopback ports
# (3 primaries, 3 replicas), each with its AOF fsynced on every write, created with redis-cli and waited
# for until every node reports cluster_state:ok.
#
#   scripts/redis-cluster.sh start DIR [--watch PID] [--secure]
#                                                      starts it in DIR; prints the seed URLs, one a line
#   scripts/redis-cluster.sh stop DIR                  stops it (SIGTERM, then SIGKILL) and keeps DIR
#   scripts/redis-cluster.sh restart DIR N             starts node N (1-6) again, as a supervisor would
#                                                      after a crash: it rejoins the cluster
#
# With --watch, a watcher stops the cluster and deletes DIR once process PID is gone (a test binary that
# started it). With --secure, clients, replication and the cluster bus speak TLS only (a CA made for the
# cluster in DIR/tls/ca.crt signs the nodes' certificate, for 127.0.0.1 and localhost), the default user
# is off and clients sign in as ACL user "presenced" with the password in DIR/password; the URLs are
# rediss:// ones.
# DIR/urls holds the URLs, DIR/ports the ports, DIR/N/ each node's files.
set -euo pipefail

usage() { echo "usage: $0 start DIR [--watch PID] [--secure] | stop DIR | restart DIR N" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
dir=$2
script=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
nodes=6

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}

# The options of a secure cluster's servers, and of redis-cli against it (none for a plain cluster).
secure_options() {
  [ -f "$dir/password" ] || return 0
  local password
  password=$(cat "$dir/password")
  server_options=(--port 0 --tls-port "$1" --tls-cert-file "$dir/tls/node.crt" --tls-key-file "$dir/tls/node.key"
    --tls-ca-cert-file "$dir/tls/ca.crt" --tls-auth-clients no --tls-replication yes --tls-cluster yes
    --user default off --user presenced on ">$password" '~*' '&*' +@all
    --masteruser presenced --masterauth "$password")
  cli_options=(--tls --cacert "$dir/tls/ca.crt" --user presenced --pass "$password" --no-auth-warning)
}
server_options=()
cli_options=()
cli() { redis-cli "${cli_options[@]}" "$@"; }

# Starts node $1 of the cluster in $dir on port $2 (its files in $dir/$1).
start_node() {
  mkdir -p "$dir/$1"
  local listen=(--port "$2")
  [ ${#server_options[@]} -gt 0 ] && listen=()
  redis-server "${listen[@]}" "${server_options[@]}" --bind 127.0.0.1 --daemonize yes --dir "$dir/$1" \
    --pidfile "$dir/$1/redis.pid" --logfile "$dir/$1/redis.log" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 3000 \
    --appendonly yes --appendfsync always --save "" \
    --cluster-require-full-coverage no --min-replicas-to-write 1 --min-replicas-max-lag 10
}

# A CA for the cluster and a certificate for its nodes (127.0.0.1, localhost), and the ACL password.
make_secrets() {
  mkdir -p "$dir/tls"
  (
    cd "$dir/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=presenced-test-ca \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout node.key -out node.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > node.ext
    openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile node.ext \
      -out node.crt 2>/dev/null
  )
  python3 -c 'import secrets; print(secrets.token_hex(16))' > "$dir/password"
}

stop() {
  local pids=()
  for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

case $action in
  stop)
    stop
    ;;
  restart)
    [ $# -ge 3 ] || usage
    port=$(sed -n "${3}p" "$dir/ports")
    [ -n "$port" ] || usage
    secure_options "$port"
    start_node "$3" "$port"
    for _ in $(seq 100); do
      cli -p "$port" ping >/dev/null 2>&1 && exit 0
      sleep 0.05
    done
    echo "node $3 did not start again" >&2
    exit 1
    ;;
  start)
    watch=""
    secure=""
    shift 2
    while [ $# -gt 0 ]; do
      case $1 in
        --watch) [ $# -ge 2 ] || usage; watch=$2; shift 2 ;;
        --secure) secure=1; shift ;;
        *) usage ;;
      esac
    done
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || {
      echo "redis-server and redis-cli are needed (Debian: redis-server, redis-tools)" >&2; exit 1; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -n "$secure" ]; then make_secrets; fi
    : > "$dir/ports"
    for n in $(seq 1 $nodes); do
      port=$(free_port)
      # The cluster bus listens on port + 10000: take another port if that one is busy.
      while ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', $port + 10000))" 2>/dev/null \
        || grep -qx "$port" "$dir/ports"; do
        port=$(free_port)
      done
      echo "$port" >> "$dir/ports"
      secure_options "$port"
      start_node "$n" "$port"
    done
    for port in $(cat "$dir/ports"); do
      for _ in $(seq 100); do
        cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.05
      done
    done
    mapfile -t ports < "$dir/ports"
    # min-replicas-to-write holds back writes until each primary has its replica; the cluster is created
    # with it, and replicas attach within a second.
    cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 1 --cluster-yes \
      > "$dir/create.log" 2>&1 || { cat "$dir/create.log" >&2; stop; exit 1; }
    for port in "${ports[@]}"; do
      for _ in $(seq 300); do
        cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
        sleep 0.1
      done
      cli -p "$port" cluster info | grep -q 'cluster_state:ok' || {
        echo "node $port did not reach cluster_state:ok" >&2; stop; exit 1; }
    done
    # Every primary has its replica attached and in sync (min-replicas-to-write refuses writes before).
    for _ in $(seq 300); do
      masters=$(cli -p "${ports[0]}" cluster nodes | awk '$3 ~ /master/ && $9 != "" {split($2, a, "[:@]"); print a[2]}')
      ready=0
      for port in $masters; do
        cli -p "$port" info replication | grep -q '^slave0:.*state=online' && ready=$((ready + 1))
      done
      [ "$ready" -eq 3 ] && break
      sleep 0.1
    done
    [ "$ready" -eq 3 ] || { echo "the replicas did not attach" >&2; stop; exit 1; }
    scheme=redis
    [ -n "$secure" ] && scheme=rediss
    printf "$scheme://127.0.0.1:%s\n" "${ports[@]}" > "$dir/urls"
    if [ -n "$watch" ]; then
      nohup bash -c "while kill -0 $watch 2>/dev/null; do sleep 1; done; '$script' stop '$dir'; rm -rf '$dir'" \
        >/dev/null 2>&1 </dev/null &
    fi
    cat "$dir/urls"
    ;;
  *)
    usage
    ;;
esac
