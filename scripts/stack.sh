# Sourced by scripts/run-local and scripts/run-cluster: what both do to run a stack in the
# foreground. Build the binaries and find them where cargo put them, mint the local API key,
# start children that stop (newest first) when the script ends, and say the stack is up only
# once the ingress's /readyz answers 200.

pids=()
stop_children() {
  # Newest first: the ingress and the workers finish their requests while NATS is still up.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
# A signal ends the script (even during the build), and leaving runs the cleanup.
trap stop_children EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Each background process in a process group of its own: Ctrl-C then reaches only this
# script, whose cleanup stops them newest first. Without it the terminal's SIGINT stops
# nats-server together with the worker, which then waits out its reply flush in vain.
set -m

# Builds both binaries; sets `bin` to the directory cargo put them in (CARGO_TARGET_DIR or
# the cargo configuration may move target/).
build_binaries() {
  cargo build --release --locked -p customers-worker -p customers-ingress
  local target_dir
  target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  bin="$target_dir/release"
}

# Mints a key with both scopes into the file $1 (its hash into $CUSTOMERS_KEYS_FILE) unless
# both are there; into place only once minted, so a failed mint leaves no empty key behind.
mint_local_key() {
  local key_file="$1"
  if [[ -s "$key_file" && -s "$CUSTOMERS_KEYS_FILE" ]]; then
    return
  fi
  mkdir -p "$(dirname "$key_file")"
  (umask 077 && "$bin/customers-ingress" keys mint --name local --environment test \
    --scope customers:read --scope customers:write > "$key_file.partial")
  mv "$key_file.partial" "$key_file"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to 5 s for something to listen on port $1.
wait_for_port() {
  for _ in $(seq 50); do
    listening "$1" && return
    sleep 0.1
  done
}

# Starts a child; it is stopped when the script ends.
start() {
  "$@" &
  pids+=($!)
}

# The status code of GET $1 on the ingress ($CUSTOMERS_LISTEN), or nothing while it does
# not answer.
http_status() {
  local host="${CUSTOMERS_LISTEN%:*}" port="${CUSTOMERS_LISTEN##*:}"
  (
    exec 4<>"/dev/tcp/$host/$port"
    printf 'GET %s HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n' "$1" "$CUSTOMERS_LISTEN" >&4
    read -r -t 2 _ status _ <&4
    echo "$status"
  ) 2>/dev/null || true
}

# Returns once the ingress is ready; exits (naming the script $1) when a child ends first or
# nothing is ready within 30 s.
wait_until_ready() {
  for _ in $(seq 300); do
    for pid in "${pids[@]}"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "$1: a part of the stack exited before it was ready (its reason is above)" >&2
        exit 1
      fi
    done
    [[ "$(http_status /readyz)" == 200 ]] && return
    sleep 0.1
  done
  echo "$1: the ingress at http://$CUSTOMERS_LISTEN is not ready after 30 s (see the log above)" >&2
  exit 1
}
