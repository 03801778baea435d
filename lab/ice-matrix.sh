#!/usr/bin/env bash
# Every ordered pair of the six client environments, connected with real
# natter processes behind real kernel NATs (lab/netlab.sh):
#   - the srv namespace runs our authority (198.51.100.1:7700) and two
#     supernodes (198.51.100.1:7710 and 198.51.100.2:7710, so a symmetric NAT
#     shows two different ports);
#   - for each ordered pair (A, B): A runs in ENV's client namespace, B in a
#     second NAT of B's type ("ENV-b"); both log in, attach and publish;
#     A runs `connect B` (the ICE offer and answer travel in sealed
#     envelopes through the supernodes), and both must report
#     `peer_connected`;
#   - both clients gather a relayed candidate (TURN allocation on their
#     supernode's relay, credentials through the overlay); a UDP-blocked
#     client attaches to the overlay over TCP and reaches its relay over TCP;
#   - prints the matrix (direct / relayed, setup time in ms) and fails on any
#     cell that is not what the NAT types allow: direct except with a
#     UDP-blocked side (relayed), and symmetric with port-restricted cone or
#     with symmetric, where port prediction may win (direct, marked "+pp")
#     or not (relayed);
#   - then the relayed-then-direct case: a call starts with direct UDP
#     between the two routers blocked (an nft rule), the rule is lifted, and
#     both sides must report `path_changed` to direct (ICE_LAB_MOVE=0 skips).
# ICE_LAB_RELAY=0 runs without relay credentials on the supernodes: the
# cells that need a relay must then fail cleanly (shown as "no-relay").
#
# usage: lab/ice-matrix.sh [--bin PATH] [--pairs "A:B A:B ..."]   (root)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${NATTER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/natter}
PAIRS=""
RELAY=${ICE_LAB_RELAY:-1}
MOVE=${ICE_LAB_MOVE:-1}
while (($#)); do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ $EUID -ne 0 ]]; then echo "ice-matrix: must run as root" >&2; exit 2; fi
[[ -x "$BIN" ]] || { echo "ice-matrix: no natter binary at $BIN (cargo build first)" >&2; exit 2; }
for c in ip nft conntrack timeout; do
    command -v "$c" >/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null && apt-get install -y -qq nftables conntrack iproute2 >/dev/null ||
            { echo "apt-get install failed" >&2; exit 2; }
        break
    }
done

TYPES=(public fullcone restricted portrestricted symmetric udpblocked)
export NETLAB_PREFIX=${NETLAB_PREFIX:-ntrice$$-}
export NETLAB_ENV_LIST="${TYPES[*]} $(printf '%s-b ' "${TYPES[@]}")"
# shellcheck source=netlab.sh
source "$HERE/netlab.sh"

TMP=$(mktemp -d /tmp/ice-matrix.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    netlab_down
    if [[ -n "${KEEP_TMP:-}" ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

T0=$(date +%s)
netlab_up || { echo "netlab up failed" >&2; exit 1; }
SRV=$(netlab_srv_ns)

# --- authority and supernodes ---------------------------------------------------
AUTH_CFG=$TMP/authority.toml
printf '[authority]\nlisten = "198.51.100.1:7700"\nregistrations_per_hour_per_address = 0\n' >"$AUTH_CFG"
ip netns exec "$SRV" "$BIN" --config "$AUTH_CFG" --data-dir "$TMP/authority" --authority >"$TMP/authority.log" 2>&1 &
PIDS+=($!)
# wait_line FILE PATTERN SECONDS: the first line of FILE matching PATTERN
wait_line() {
    local f=$1 pat=$2 n=$(($3 * 10)) l
    while ((n-- > 0)); do
        l=$(grep -m1 -e "$pat" "$f" 2>/dev/null) && { echo "$l"; return 0; }
        sleep 0.1
    done
    return 1
}
KEY=$(wait_line "$TMP/authority.log" '^authority public key: ' 20) || { echo "authority did not start" >&2; cat "$TMP/authority.log"; exit 1; }
KEY=${KEY#authority public key: }
wait_line "$TMP/authority.log" '^listening on ' 20 >/dev/null || { echo "authority did not listen" >&2; exit 1; }
CFG=$TMP/client.toml
printf '[login]\nserver = "198.51.100.1:7700"\nauthority_key = "%s"\n[overlay]\nlisten = "0.0.0.0:0"\nbootstrap = ["198.51.100.1:7710", "198.51.100.2:7710"]\n[audio]\ninput = "null"\noutput = "null"\n' "$KEY" >"$CFG"
# One relay group: both supernodes run TURN (UDP and TCP) with this secret.
((RELAY)) && printf '[relay]\nsecret = "ice-lab-secret-%s"\n' "$$" >>"$CFG"

nat() { ip netns exec "$SRV" "$BIN" --config "$CFG" --data-dir "$TMP/u-$1" "${@:2}"; }
account() {   # NAME [supernode]
    echo "$1-password" | nat "$1" register "$1" --password-stdin >/dev/null 2>>"$TMP/accounts.log" || return 1
    if [[ "${2:-}" == supernode ]]; then
        "$BIN" --config "$AUTH_CFG" --data-dir "$TMP/authority" admin set-role "$1" supernode >/dev/null 2>>"$TMP/accounts.log" || return 1
    fi
    echo "$1-password" | nat "$1" login "$1" --password-stdin >/dev/null 2>>"$TMP/accounts.log"
}
user_of() { echo "u-${1//-/}"; }   # environment -> username (u-fullcone, u-fullconeb)
for n in sn1 sn2; do account "$n" supernode || { echo "account $n failed" >&2; cat "$TMP/accounts.log"; exit 1; }; done
for e in $(netlab_envs); do account "$(user_of "$e")" || { echo "account for $e failed" >&2; cat "$TMP/accounts.log"; exit 1; }; done
ip netns exec "$SRV" "$BIN" --config "$CFG" --data-dir "$TMP/u-sn1" --supernode --listen 198.51.100.1:7710 >"$TMP/sn1.log" 2>&1 &
PIDS+=($!)
wait_line "$TMP/sn1.log" '^listening on ' 20 >/dev/null || { echo "sn1 did not start" >&2; cat "$TMP/sn1.log"; exit 1; }
ip netns exec "$SRV" "$BIN" --config "$CFG" --data-dir "$TMP/u-sn2" --supernode --listen 198.51.100.2:7710 --bootstrap 198.51.100.1:7710 >"$TMP/sn2.log" 2>&1 &
PIDS+=($!)
wait_line "$TMP/sn2.log" '^listening on ' 20 >/dev/null || { echo "sn2 did not start" >&2; exit 1; }
sleep 1

# --- one pair -------------------------------------------------------------------
expect_direct() {   # TYPE_A TYPE_B -> 0 when the pair must go direct
    local a=$1 b=$2
    [[ $a == udpblocked || $b == udpblocked ]] && return 1
    [[ $a == symmetric && ($b == portrestricted || $b == symmetric) ]] && return 1
    [[ $b == symmetric && $a == portrestricted ]] && return 1
    return 0
}

udp_blocked_pair() { [[ $1 == udpblocked || $2 == udpblocked ]]; }

# headless ENV USER NAME PORT [FLAGS...]: start a client in ENV's namespace; stdin from a fifo
headless() {
    local env=$1 user=$2 name=$3 port=$4
    shift 4
    mkfifo "$TMP/$name.in"
    ip netns exec "$(netlab_ns "$env")" "$BIN" --config "$CFG" --data-dir "$TMP/u-$user" \
        --log-level natter=debug --headless --json --listen "0.0.0.0:$port" "$@" \
        <"$TMP/$name.in" >"$TMP/$name.out" 2>"$TMP/$name.log" &
    PIDS+=($!)
    eval "PID_$name=$!"
    exec {fd}>"$TMP/$name.in"
    eval "FD_$name=$fd"
}
say() { local fd; eval "fd=\$FD_$1"; echo "$2" >&"$fd"; }
stop_clients() {   # NAME...: quit, then at most 2 s before a kill
    local n fd pid pids=()
    for n in "$@"; do
        eval "fd=\$FD_$n; pid=\$PID_$n"
        echo quit >&"$fd" 2>/dev/null
        exec {fd}>&-
        pids+=("$pid")
    done
    for _ in $(seq 20); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
}
json_field() { sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1" | head -1; }

declare -A CELL SETUP
WRONG=()
PREDICTED=()
PAIR_N=0
run_pair() {   # A B   (environment types; B runs behind the second NAT of its type)
    local a=$1 b=$2 eb="$2-b" ua ub line data res_a res_b path_a path_b ms
    PAIR_N=$((PAIR_N + 1))
    local pa=$((21000 + PAIR_N * 2)) pb=$((21001 + PAIR_N * 2))
    for r in "$a" "$eb"; do
        [[ $(netlab_type "$r") == public ]] || netlab_router_exec "$r" conntrack -F >/dev/null 2>&1
    done
    ua=$(user_of "$a"); ub=$(user_of "$eb")
    rm -f "$TMP"/A.* "$TMP"/B.*
    headless "$eb" "$ub" B "$pb"
    headless "$a" "$ua" A "$pa"
    # UDP-blocked clients attach over TCP after the fallback (3 s); without
    # relays they cannot connect anyway: do not wait long for them.
    local wait_a=15 wait_b=15
    if ((RELAY == 0)); then
        [[ $a == udpblocked ]] && wait_a=3
        [[ $b == udpblocked ]] && wait_b=3
    fi
    wait_line "$TMP/B.out" '"event":"published"' "$wait_b" >/dev/null
    wait_line "$TMP/A.out" '"event":"published"' "$wait_a" >/dev/null
    # Only contacts get each other's ICE candidates (issue 14.10): the two
    # users add each other first (the request and the acceptance travel
    # through the supernodes like any message).
    say A "add $ub"
    wait_line "$TMP/B.out" '"event":"contact_request"' 10 >/dev/null
    say B "accept $ua"
    wait_line "$TMP/A.out" "\"event\":\"contact_added\".*\"$ub\"" 10 >/dev/null
    wait_line "$TMP/B.out" "\"event\":\"contact_added\".*\"$ua\"" 10 >/dev/null
    # The offer and answer travel in sealed envelopes through the supernodes.
    say A "connect $ub"
    # An attempt is bounded at 10 s.
    res_a=$(wait_line "$TMP/A.out" '"event":"peer_\(connected\|failed\)"' 15)
    if [[ -n $res_a ]] && grep -q '"event":"ice_answer"' "$TMP/B.out"; then
        res_b=$(wait_line "$TMP/B.out" '"event":"peer_\(connected\|failed\)"' 15)
    else
        res_b=""
    fi
    stop_clients A B
    local got
    if [[ $res_a == *peer_connected* && $res_b == *peer_connected* ]]; then
        path_a=$(json_field "$res_a" path); path_b=$(json_field "$res_b" path)
        ms=$(json_field "$res_a" setup_ms)
        if [[ $path_a == direct && $path_b == direct ]]; then got=direct; else got=relayed; fi
        SETUP[$a,$b]=$ms
    else
        got=failed
        SETUP[$a,$b]=-
    fi
    # Port prediction won: a path to (or from) a predicted port.
    if [[ $got == direct && "$res_a$res_b" == *'"predicted"'* ]]; then
        PREDICTED+=("$a -> $b")
        CELL[$a,$b]=direct+pp
    else
        CELL[$a,$b]=$got
    fi
    local want=relayed
    expect_direct "$a" "$b" && want=direct
    local ok=0
    if [[ $got == "$want" ]]; then ok=1
    elif [[ $want == relayed && $got == direct ]] && ! udp_blocked_pair "$a" "$b"; then
        ok=1   # symmetric against port-restricted/symmetric: port prediction won
    elif [[ $want == relayed && $RELAY == 0 && $got == failed ]]; then
        CELL[$a,$b]=no-relay; ok=1
    fi
    if ((ok == 0)); then
        WRONG+=("$a -> $b: got $got, want $want (A: ${res_a:-no result}; B: ${res_b:-no result})")
        mkdir -p "$TMP/wrong/$a-$b"; cp "$TMP"/A.out "$TMP"/A.log "$TMP"/B.out "$TMP"/B.log "$TMP/wrong/$a-$b/" 2>/dev/null
    fi
    printf '%-15s -> %-15s %-9s %s ms\n' "$a" "$b" "${CELL[$a,$b]}" "${SETUP[$a,$b]}"
}

if [[ -n "$PAIRS" ]]; then
    for p in $PAIRS; do run_pair "${p%%:*}" "${p##*:}"; done
else
    for a in "${TYPES[@]}"; do for b in "${TYPES[@]}"; do run_pair "$a" "$b"; done; done
fi

# --- relayed, then direct ---------------------------------------------------------
# A (port-restricted cone) calls B (full cone, second NAT) with a 1 kHz tone while
# A's router drops all UDP between the two routers: only the relays carry the call.
# The rule is lifted; the call must move to a direct path (`path_changed`, and
# `call_stats` saying `direct` on both sides) with no gap in the audio B records.
MOVED=""
move_case() {
    local a=portrestricted eb=fullcone-b ua ub wan_b res_a res_b ch_a ch_b t_lift t_a t_b fin gap
    PAIR_N=$((PAIR_N + 1))
    netlab_flush_conntrack "$a"; netlab_flush_conntrack "$eb"
    wan_b=$(netlab_wan_ip "$eb")
    netlab_router_exec "$a" nft add rule ip lab udpblock ip daddr "$wan_b" meta l4proto udp counter drop
    netlab_router_exec "$a" nft add rule ip lab udpblock ip saddr "$wan_b" meta l4proto udp counter drop
    ua=$(user_of "$a"); ub=$(user_of "$eb")
    rm -f "$TMP"/A.* "$TMP"/B.*
    headless "$eb" "$ub" B $((21000 + PAIR_N * 2)) --auto-answer --record "$TMP/B.wav"
    headless "$a" "$ua" A $((21001 + PAIR_N * 2)) --play tone:1000
    wait_line "$TMP/B.out" '"event":"published"' 15 >/dev/null
    wait_line "$TMP/A.out" '"event":"published"' 15 >/dev/null
    say A "call $ub"
    res_a=$(wait_line "$TMP/A.out" '"event":"call_stats".*"path":"\(direct\|relayed\)"' 20)
    res_b=$(wait_line "$TMP/B.out" '"event":"call_stats".*"path":"\(direct\|relayed\)"' 10)
    if [[ $(json_field "$res_a" path) != relayed || $(json_field "$res_b" path) != relayed ]]; then
        MOVED="FAILED: the call did not start relayed (A: ${res_a:-none}; B: ${res_b:-none})"
    else
        sleep 2   # the call runs relayed for a while
        netlab_router_exec "$a" nft flush chain ip lab udpblock
        t_lift=$(date +%s%N)
        ch_a=$(wait_line "$TMP/A.out" '"event":"path_changed".*"path":"direct"' 30)
        t_a=$(date +%s%N)
        ch_b=$(wait_line "$TMP/B.out" '"event":"path_changed".*"path":"direct"' 10)
        t_b=$(date +%s%N)
        if [[ -z $ch_a || -z $ch_b ]]; then
            MOVED="FAILED: no path_changed to direct (A: ${ch_a:-none}; B: ${ch_b:-none})"
        elif ! wait_line "$TMP/A.out" '"event":"call_stats".*"path":"direct"' 5 >/dev/null \
            || ! wait_line "$TMP/B.out" '"event":"call_stats".*"path":"direct"' 5 >/dev/null; then
            MOVED="FAILED: the link moved but the call's media did not"
        else
            sleep 2   # and direct for a while
            say A hangup
            fin=$(wait_line "$TMP/B.out" '"event":"call_stats".*"final":true' 10)
            gap=$(python3 "$HERE/wav-gaps.py" "$TMP/B.wav" 1000 2>&1)
            if [[ -z $fin ]]; then
                MOVED="FAILED: B's recording was not completed"
            elif [[ $gap != ok* ]]; then
                MOVED="FAILED: the audio B recorded has a gap: $gap"
            else
                MOVED="relayed -> direct mid-call: A moved $(((t_a - t_lift) / 1000000)) ms after the rule was lifted, B by $(((t_b - t_lift) / 1000000)) ms; B's recording: $gap; B concealed $(json_field "$fin" concealed) frames"
            fi
        fi
    fi
    netlab_router_exec "$a" nft flush chain ip lab udpblock
    stop_clients A B
    if [[ $MOVED == FAILED* ]]; then
        WRONG+=("move case: $MOVED")
        mkdir -p "$TMP/wrong/move"; cp "$TMP"/A.out "$TMP"/A.log "$TMP"/B.out "$TMP"/B.log "$TMP"/B.wav "$TMP/wrong/move/" 2>/dev/null
    fi
    echo "move: $MOVED"
}
((RELAY && MOVE)) && move_case

# --- the matrix -------------------------------------------------------------------
echo
printf 'caller \\ callee  '
for b in "${TYPES[@]}"; do printf '%-18s' "$b"; done
echo
for a in "${TYPES[@]}"; do
    printf '%-16s ' "$a"
    for b in "${TYPES[@]}"; do
        if [[ -n "${CELL[$a,$b]:-}" ]]; then
            printf '%-18s' "${CELL[$a,$b]} ${SETUP[$a,$b]}"
        else
            printf '%-18s' "."
        fi
    done
    echo
done
echo "(cells: path and setup time in ms from \`connect\` to the peer link being up on the caller)"
if ((${#PREDICTED[@]})); then
    echo "+pp: direct thanks to port prediction: ${PREDICTED[*]}"
else
    echo "+pp: port prediction won no cell"
fi
[[ -n $MOVED ]] && echo "relayed then direct: $MOVED"
if ((RELAY == 0)); then
    echo "no-relay: needs a relay; the supernodes run none (ICE_LAB_RELAY=0)"
fi
echo "ice-matrix: $PAIR_N pairs in $(($(date +%s) - T0)) s"
if ((${#WRONG[@]})); then
    printf 'WRONG: %s\n' "${WRONG[@]}"
    KEEP_TMP=1
    exit 1
fi
echo "ice-matrix: every cell as expected"
