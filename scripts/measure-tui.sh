#!/usr/bin/env bash
# Measure the softphone UI in a real terminal (tmux):
#  1. start-up time of `natter demo` to its first drawn screen, and to the
#     buddy list with both demo contacts online (RUNS runs);
#  2. idle CPU and memory of a TUI client (`natter` with no mode) logged in
#     to an authority and a supernode running as separate processes, from
#     /proc over SECONDS seconds; and of the whole demo process for
#     comparison.
# Usage: scripts/measure-tui.sh [path/to/natter] [RUNS] [SECONDS]
# Default binary: target/debug/natter (build it first with `cargo build`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/debug/natter}")
RUNS=${2:-5}
SECS=${3:-30}
command -v tmux >/dev/null || { echo "tmux is needed (apt-get install -y tmux)" >&2; exit 1; }
WORK=$(mktemp -d)
SOCK=natter-measure-$$
PIDS=()
cleanup() {
    tmux -L "$SOCK" kill-server 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
TICK=$(getconf CLK_TCK)
now_ms() { date +%s%3N; }
screen() { tmux -L "$SOCK" capture-pane -p -t m; }
# wait_for PATTERN TIMEOUT_S: poll the pane until grep -q PATTERN matches.
wait_for() {
    local deadline=$(( $(now_ms) + $2 * 1000 ))
    until screen | grep -q -- "$1"; do
        (( $(now_ms) < deadline )) || { echo "timed out waiting for: $1" >&2; screen >&2; exit 1; }
        sleep 0.02
    done
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# idle PID: CPU % and RSS over $SECS seconds.
idle() {
    local t0 c0 t1 c1
    t0=$(now_ms); c0=$(cpu_ticks "$1")
    sleep "$SECS"
    t1=$(now_ms); c1=$(cpu_ticks "$1")
    awk -v c=$((c1 - c0)) -v hz="$TICK" -v ms=$((t1 - t0)) -v rss="$(rss_kb "$1")" \
        'BEGIN { printf "CPU %.2f %% of one core over %.0f s, RSS %.1f MiB\n", 100 * c / hz / (ms / 1000), ms / 1000, rss / 1024 }'
}

echo "binary: $BIN"
echo "== natter demo: start-up ($RUNS runs, 100x30 terminal)"
for i in $(seq "$RUNS"); do
    tmux -L "$SOCK" -f /dev/null new-session -d -s m -x 100 -y 30 "exec env TMPDIR=$WORK $BIN demo"
    t0=$(now_ms)
    until screen | head -1 | grep -q '^ natter '; do sleep 0.005; done
    t1=$(now_ms)
    wait_for '● bot' 30
    wait_for '● echo123' 30
    t2=$(now_ms)
    pid=$(tmux -L "$SOCK" display -p -t m '#{pane_pid}')
    echo "run $i: first screen $((t1 - t0)) ms, both contacts online $((t2 - t0)) ms"
    if [ "$i" = "$RUNS" ]; then
        echo "== the whole demo process idle (authority, 2 supernodes, 2 bots and the TUI)"
        idle "$pid"
    fi
    tmux -L "$SOCK" send-keys -t m q
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    tmux -L "$SOCK" kill-server 2>/dev/null || true
done
grep -h "first frame drawn" "$WORK"/natter-demo-*.log | sed 's/.*ms=/in-process, from main() to the first frame: /; s/$/ ms/'

echo "== TUI client alone, logged in to separate authority and supernode processes"
cat >"$WORK/auth.toml" <<EOF
[authority]
listen = "127.0.0.1:0"
registrations_per_hour_per_address = 0
EOF
"$BIN" --config "$WORK/auth.toml" --data-dir "$WORK/auth" --authority >"$WORK/auth.out" 2>/dev/null &
PIDS+=($!)
until grep -q '^listening on' "$WORK/auth.out" 2>/dev/null; do sleep 0.05; done
KEY=$(sed -n 's/^authority public key: //p' "$WORK/auth.out")
AUTH=$(sed -n 's/^listening on //p' "$WORK/auth.out")
cat >"$WORK/sn.toml" <<EOF
[login]
server = "$AUTH"
authority_key = "$KEY"
[supernode]
listen = "127.0.0.1:0"
EOF
echo "sesame-sesame" | "$BIN" --config "$WORK/sn.toml" --data-dir "$WORK/sn" register sn1 --password-stdin >/dev/null
"$BIN" --config "$WORK/auth.toml" --data-dir "$WORK/auth" admin set-role sn1 supernode >/dev/null
echo "sesame-sesame" | "$BIN" --config "$WORK/sn.toml" --data-dir "$WORK/sn" login sn1 --password-stdin >/dev/null
"$BIN" --config "$WORK/sn.toml" --data-dir "$WORK/sn" --supernode >"$WORK/sn.out" 2>/dev/null &
PIDS+=($!)
until grep -q '^listening on' "$WORK/sn.out" 2>/dev/null; do sleep 0.05; done
SN=$(sed -n 's/^listening on //p' "$WORK/sn.out")
cat >"$WORK/alice.toml" <<EOF
[login]
server = "$AUTH"
authority_key = "$KEY"
[overlay]
bootstrap = ["$SN"]
listen = "127.0.0.1:0"
[log]
file = "$WORK/alice.log"
EOF
echo "sesame-sesame" | "$BIN" --config "$WORK/alice.toml" --data-dir "$WORK/alice" register alice --password-stdin >/dev/null
echo "sesame-sesame" | "$BIN" --config "$WORK/alice.toml" --data-dir "$WORK/alice" login alice --password-stdin >/dev/null
tmux -L "$SOCK" -f /dev/null new-session -d -s m -x 100 -y 30 "exec $BIN --config $WORK/alice.toml --data-dir $WORK/alice"
wait_for '1 supernode' 30
pid=$(tmux -L "$SOCK" display -p -t m '#{pane_pid}')
sleep 2
idle "$pid"
tmux -L "$SOCK" send-keys -t m q
