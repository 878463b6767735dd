# clients/python/server.bash — sourced by scripts/python-client-test and scripts/demo: start a
# temporary `custos serve` on any free port and stop it again.
#
#   start_server BIN CONFIG WORKDIR   starts `BIN serve --config CONFIG --port 0 --metrics-port 0
#                                     --address-file WORKDIR/address` in the background (log in
#                                     WORKDIR/serve.log), waits up to 60 s for the address;
#                                     sets SERVER_PID and SERVER_ADDRESS; returns 1 on timeout or
#                                     if the server exits first (and prints the log's tail).
#   stop_server                       SIGTERM, then waits; returns the server's exit status
#                                     (0 for a graceful stop). No-op without a server.
# Only the process this shell started is signalled, by its pid.

SERVER_PID=
SERVER_ADDRESS=
SERVER_LOG=

start_server() {
    local bin=$1 config=$2 work=$3 i
    SERVER_LOG="$work/serve.log"
    rm -f -- "$work/address"
    "$bin" serve --config "$config" --port 0 --metrics-port 0 --address-file "$work/address" \
        </dev/null >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    for ((i = 0; i < 600; i++)); do
        [[ -s $work/address ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! -s $work/address ]]; then
        printf 'the server did not write its address within 60 s (or exited); its log:\n' >&2
        tail -n 40 "$SERVER_LOG" >&2 || true
        stop_server || true
        return 1
    fi
    SERVER_ADDRESS=$(head -n 1 "$work/address")
}

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local status=0
    wait "$SERVER_PID" || status=$?
    SERVER_PID=
    return "$status"
}
