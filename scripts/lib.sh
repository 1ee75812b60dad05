# Shell helpers the cluster and cost scripts share. Source it after
# setting `state` (a directory named in error messages) and, for
# `redis_up`, `redis_port`.

# Print "<script>: $*" to stderr and exit 1.
die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# HTTP status of GET $1 (000 when nothing answers).
http_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true
}

# Wait until `$@` succeeds, at most $2 seconds ($1 names it).
wait_for() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS < deadline)) || die "$what did not come up within ${timeout}s (logs: $state)"
    sleep 0.1
  done
}

redis_up() {
  [[ $(redis-cli -p "$redis_port" PING 2>/dev/null) == PONG ]]
}

instance_up() {
  [[ $(http_status "http://127.0.0.1:$1/ready") == 200 ]]
}

# Whether nothing listens on 127.0.0.1:$1.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A free port at or above $1 (never 6379).
free_port() {
  local port=$1
  while [[ $port == 6379 ]] || ! port_free "$port"; do
    port=$((port + 1))
  done
  echo "$port"
}

# Whether something listens on 127.0.0.1:$1.
port_taken() {
  ! port_free "$1"
}
