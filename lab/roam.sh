#!/usr/bin/env bash
# Roaming mid-call in the kernel lab: a laptop leaves its Wi-Fi for a phone's
# hotspot during a call. The roaming client's namespace has three uplinks,
# each to its own home NAT; a move takes its address off one (the link goes
# down, the default route with it) and puts a new address on another, as a
# network manager does. Its socket, bound to 0.0.0.0, sends from the new
# address at once; natter's address watch notices within 250 ms and the ICE
# session tells the peer (a nomination from the new address), which moves its
# side of the path there. NAT detection runs again ("local address changed").
#
#  ns <P>wan: bridge br0 --+-- <P>srv     198.51.100.1 + .2 (authority, two supernodes)
#                          +-- <P>public  198.51.100.11     (the other party, no NAT)
#                          +-- <P>rtra    198.51.100.31 | 10.84.0.1  port-restricted (EIM+APDF)
#                          +-- <P>rtrb    198.51.100.32 | 10.85.0.1  full cone (EIM+EIF)
#                          +-- <P>rtrc    198.51.100.33 | 10.86.0.1  symmetric (APDM+APDF)
#                                 `-- <P>roamer: lan0 to rtra (10.84.0.2), lan1 to rtrb
#                                     (10.85.0.2), lan2 to rtrc (10.86.0.2); one up at a time
#
# Calls (both sides play a tone and record; the callee auto-answers):
#   1. roamer calls public (the roamer controls ICE) and moves rtra -> rtrb
#      (port-restricted to full cone);
#   2. public calls roamer (the roamer is controlled) and moves rtrb -> rtrc
#      (full cone to symmetric).
# Each call runs 3 s, the move, then until the roamer's NAT detection has run
# again (at most 20 s) and 3 s more. Checks: both recordings carry the other's
# tone with no silence over 1 s (lab/wav-gaps.py), both ends on a direct path
# after the move, the public side's path ending at the roamer's new public
# address, and a `nat` event with reason "local address changed" giving that
# address. Prints dial-to-two-way-audio and the silence around the move;
# exit status 1 on any failure.
#
# usage: lab/roam.sh [--bin PATH]   (root; namespaces are cxroam-<pid>-*)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${NATTER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/natter}
while (($#)); do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ $EUID -ne 0 ]]; then echo "roam: must run as root" >&2; exit 2; fi
[[ -x "$BIN" ]] || { echo "roam: no natter binary at $BIN" >&2; exit 2; }

P=${ROAM_PREFIX:-cxroam-$$-}
NSS=(wan srv public rtra rtrb rtrc roamer)
TMP=$(mktemp -d /tmp/roam.XXXXXX)
PIDS=()

ns() { echo "$P$1"; }
# `ip -n` only on namespaces of this prefix that exist (never the root one).
ipn() {
    local n=$1; shift
    [[ -n "$n" && "$n" == "$P"* && -e "/run/netns/$n" ]] || { echo "refusing ip -n $n $*" >&2; return 1; }
    ip -n "$n" "$@"
}
inns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }

down() {
    local n pids
    for n in "${NSS[@]}"; do
        [[ -e "/run/netns/$P$n" ]] || continue
        pids=$(ip netns pids "$P$n" 2>/dev/null)
        [[ -n "$pids" ]] && kill $pids 2>/dev/null
    done
    sleep 0.2
    for n in "${NSS[@]}"; do
        [[ -e "/run/netns/$P$n" ]] || continue
        pids=$(ip netns pids "$P$n" 2>/dev/null)
        [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null
        ip netns del "$P$n" 2>/dev/null
    done
}
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    down
    if [[ -n "${KEEP_TMP:-}" ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'echo interrupted >&2; exit 130' INT
trap 'exit 143' TERM

# --- topology --------------------------------------------------------------------
mkns() {
    ip netns add "$(ns "$1")" || return 1
    ipn "$(ns "$1")" link set lo up
    inns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null
}
# link A IFA B IFB: a veth pair between two lab namespaces
link() {
    ipn "$(ns "$1")" link add "$2" type veth peer name "$4" netns "$(ns "$3")" || return 1
    ipn "$(ns "$1")" link set "$2" up && ipn "$(ns "$3")" link set "$4" up
}
addr() { ipn "$(ns "$1")" addr add "$3" dev "$2"; }
on_wan() {   # NS PORT ADDR...
    local n=$1 port=$2; shift 2
    link wan "$port" "$n" wan0 || return 1
    ipn "$(ns wan)" link set "$port" master br0 || return 1
    local a; for a in "$@"; do addr "$n" wan0 "$a/24" || return 1; done
}
# nft rules: NAT TYPE on router NS, its WAN address, the single inside host
nat_rules() {   # NS TYPE WAN_IP INSIDE_IP
    local n=$1 t=$2 wan=$3 inside=$4 sets="" fwd="" pre="" post
    case $t in
        symmetric) post='oifname "wan0" masquerade fully-random' ;;
        portrestricted) post='oifname "wan0" masquerade' ;;
        fullcone)
            sets='set mapped { type inet_service; flags dynamic,timeout; timeout 180s; }'
            fwd='iifname "lan0" oifname "wan0" meta l4proto udp update @mapped { udp sport }'
            pre="iifname \"wan0\" ip daddr $wan udp dport @mapped dnat to $inside"
            post="oifname \"wan0\" meta l4proto udp snat to $wan
        oifname \"wan0\" masquerade" ;;
    esac
    inns "$n" sysctl -qw net.ipv4.ip_forward=1 >/dev/null
    inns "$n" nft -f - <<EOF
table ip lab {
    $sets
    chain forward { type filter hook forward priority filter; policy accept; $fwd
    }
    chain input { type filter hook input priority filter; policy accept;
        iifname "wan0" ct state new meta l4proto != icmp drop
    }
    chain prerouting { type nat hook prerouting priority dstnat; policy accept; $pre
    }
    chain postrouting { type nat hook postrouting priority srcnat; policy accept;
        $post
    }
}
EOF
}

# The roamer's uplinks: router, its LAN prefix, the roamer's interface.
declare -A LAN=([rtra]=10.84.0 [rtrb]=10.85.0 [rtrc]=10.86.0)
declare -A IFC=([rtra]=lan0 [rtrb]=lan1 [rtrc]=lan2)
declare -A WANIP=([rtra]=198.51.100.31 [rtrb]=198.51.100.32 [rtrc]=198.51.100.33)

build() {
    local n r
    for n in "${NSS[@]}"; do mkns "$n" || return 1; done
    ipn "$(ns wan)" link add br0 type bridge || return 1
    ipn "$(ns wan)" link set br0 up || return 1
    on_wan srv psrv 198.51.100.1 198.51.100.2 || return 1
    on_wan public ppub 198.51.100.11 || return 1
    on_wan rtra pra "${WANIP[rtra]}" || return 1
    on_wan rtrb prb "${WANIP[rtrb]}" || return 1
    on_wan rtrc prc "${WANIP[rtrc]}" || return 1
    for r in rtra rtrb rtrc; do
        link "$r" lan0 roamer "${IFC[$r]}" || return 1
        addr "$r" lan0 "${LAN[$r]}.1/24" || return 1
        ipn "$(ns roamer)" link set "${IFC[$r]}" down || return 1
    done
    nat_rules rtra portrestricted "${WANIP[rtra]}" 10.84.0.2 || return 1
    nat_rules rtrb fullcone "${WANIP[rtrb]}" 10.85.0.2 || return 1
    nat_rules rtrc symmetric "${WANIP[rtrc]}" 10.86.0.2 || return 1
}

# The roamer joins the network behind router R (leaving any other).
join() {   # R
    local r=$1 o
    for o in rtra rtrb rtrc; do
        [[ $o == "$r" ]] && continue
        ipn "$(ns roamer)" addr flush dev "${IFC[$o]}" || return 1
        ipn "$(ns roamer)" link set "${IFC[$o]}" down || return 1
    done
    ipn "$(ns roamer)" link set "${IFC[$r]}" up || return 1
    ipn "$(ns roamer)" addr replace "${LAN[$r]}.2/24" dev "${IFC[$r]}" || return 1
    ipn "$(ns roamer)" route replace default via "${LAN[$r]}.1" || return 1
}

T0=$(date +%s%N)
build || { echo "roam: building the lab failed" >&2; exit 1; }
echo "roam: lab up in $((($(date +%s%N) - T0) / 1000000)) ms (prefix $P)"

# --- authority and supernodes ----------------------------------------------------------
wait_line() {   # FILE PATTERN SECONDS
    local f=$1 pat=$2 n=$(($3 * 100)) l
    while ((n-- > 0)); do
        l=$(grep -m1 -e "$pat" "$f" 2>/dev/null) && { echo "$l"; return 0; }
        sleep 0.01
    done
    return 1
}
AUTH_CFG=$TMP/authority.toml
printf '[authority]\nlisten = "198.51.100.1:7700"\nregistrations_per_hour_per_address = 0\n' >"$AUTH_CFG"
inns srv "$BIN" --config "$AUTH_CFG" --data-dir "$TMP/authority" --authority >"$TMP/authority.log" 2>&1 &
PIDS+=($!)
KEY=$(wait_line "$TMP/authority.log" '^authority public key: ' 30) || { echo "authority did not start" >&2; cat "$TMP/authority.log"; exit 1; }
KEY=${KEY#authority public key: }
wait_line "$TMP/authority.log" '^listening on ' 30 >/dev/null || exit 1
CFG=$TMP/client.toml
printf '[login]\nserver = "198.51.100.1:7700"\nauthority_key = "%s"\n[overlay]\nlisten = "0.0.0.0:0"\nbootstrap = ["198.51.100.1:7710", "198.51.100.2:7710"]\n[relay]\nsecret = "roam-%s"\n' "$KEY" "$$" >"$CFG"
nat() { inns srv "$BIN" --config "$CFG" --data-dir "$TMP/u-$1" "${@:2}"; }
account() {
    echo "$1-password" | nat "$1" register "$1" --password-stdin >/dev/null 2>>"$TMP/accounts.log" || return 1
    if [[ "${2:-}" == supernode ]]; then
        "$BIN" --config "$AUTH_CFG" --data-dir "$TMP/authority" admin set-role "$1" supernode >/dev/null 2>>"$TMP/accounts.log" || return 1
    fi
    echo "$1-password" | nat "$1" login "$1" --password-stdin >/dev/null 2>>"$TMP/accounts.log"
}
for n in sn1 sn2; do account "$n" supernode || { cat "$TMP/accounts.log"; exit 1; }; done
for e in roamer public; do account "u-$e" || { cat "$TMP/accounts.log"; exit 1; }; done
inns srv "$BIN" --config "$CFG" --data-dir "$TMP/u-sn1" --supernode --listen 198.51.100.1:7710 >"$TMP/sn1.log" 2>&1 &
PIDS+=($!)
wait_line "$TMP/sn1.log" '^listening on ' 30 >/dev/null || { cat "$TMP/sn1.log"; exit 1; }
inns srv "$BIN" --config "$CFG" --data-dir "$TMP/u-sn2" --supernode --listen 198.51.100.2:7710 --bootstrap 198.51.100.1:7710 >"$TMP/sn2.log" 2>&1 &
PIDS+=($!)
wait_line "$TMP/sn2.log" '^listening on ' 30 >/dev/null || exit 1
sleep 1

# --- calls --------------------------------------------------------------------------------
headless() {   # ENV NAME PORT FLAGS...
    local env=$1 name=$2 port=$3; shift 3
    mkfifo "$TMP/$name.in"
    inns "$env" "$BIN" --config "$CFG" --data-dir "$TMP/u-u-$env" --log-level natter=debug \
        --headless --json --listen "0.0.0.0:$port" "$@" \
        <"$TMP/$name.in" >"$TMP/$name.out" 2>"$TMP/$name.log" &
    PIDS+=($!)
    eval "PID_$name=$!"
    exec {fd}>"$TMP/$name.in"
    eval "FD_$name=$fd"
}
say() { local fd; eval "fd=\$FD_$1"; echo "$2" >&"$fd"; }
stop() {
    local n fd pid pids=()
    for n in "$@"; do
        eval "fd=\$FD_$n; pid=\$PID_$n"
        echo quit >&"$fd" 2>/dev/null
        exec {fd}>&-
        pids+=("$pid")
    done
    for _ in $(seq 30); do
        local alive=0 p
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
}
field() { sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1" | head -1; }
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

FAILS=()
N=0
# CALLER CALLEE FROM TO: one call, the roamer moving from router FROM to TO.
run_call() {
    local caller=$1 callee=$2 from=$3 to=$4 name t0 t_active act s_a moved nat_ev
    local gap_r gap_p fin_r fin_p path_r path_p remote_p cell
    N=$((N + 1))
    name="$caller -> $callee, roamer ${from} -> ${to}"
    join "$from" || { FAILS+=("$name: join $from"); return; }
    for r in rtra rtrb rtrc; do inns "$r" conntrack -F >/dev/null 2>&1; done
    inns rtrb nft flush set ip lab mapped 2>/dev/null
    rm -f "$TMP"/R.* "$TMP"/Q.*
    # R: the roamer, Q: the public party; the callee auto-answers.
    local r_flags=(--play tone:1000 --record "$TMP/R.wav") q_flags=(--play tone:600 --record "$TMP/Q.wav")
    if [[ $callee == roamer ]]; then r_flags+=(--auto-answer); else q_flags+=(--auto-answer); fi
    headless roamer R $((23000 + 2 * N)) "${r_flags[@]}"
    headless public Q $((23001 + 2 * N)) "${q_flags[@]}"
    wait_line "$TMP/R.out" '"event":"published"' 20 >/dev/null
    wait_line "$TMP/Q.out" '"event":"published"' 20 >/dev/null
    local dialer=R
    [[ $caller == public ]] && dialer=Q
    t0=$(date +%s%N)
    say "$dialer" "call u-$callee"
    act=$(wait_line "$TMP/$dialer.out" '"event":"call_state".*"state":"active"' 20)
    t_active=$(ms "$t0")
    s_a=""
    if [[ -n $act ]]; then
        for _ in $(seq 2000); do
            s_a=$(grep '"event":"call_stats"' "$TMP/$dialer.out" 2>/dev/null | grep -v '"packets_received":0[,}]' | grep -m1 '"path":"\(direct\|relayed\)"')
            [[ -n $s_a ]] && break
            sleep 0.01
        done
    fi
    if [[ -z $s_a ]]; then
        FAILS+=("$name: no two-way audio")
        stop R Q
        KEEP_TMP=1; mkdir -p "$TMP/fail-$N"; cp "$TMP"/[RQ].out "$TMP"/[RQ].log "$TMP"/[RQ].wav "$TMP/fail-$N/" 2>/dev/null
        return
    fi
    sleep 3
    local before_nat
    before_nat=$(grep -c '"event":"nat"' "$TMP/R.out")
    moved=$(date +%s%N)
    join "$to" || FAILS+=("$name: join $to")
    echo "  moved at +$(ms "$t0") ms (call active at +$t_active ms)"
    # NAT detection runs again on the new network.
    nat_ev=""
    for _ in $(seq 2000); do
        nat_ev=$(grep '"event":"nat"' "$TMP/R.out" | tail -n +$((before_nat + 1)) | grep -m1 '"reason":"local address changed"')
        [[ -n $nat_ev ]] && break
        sleep 0.01
    done
    local nat_ms
    nat_ms=$(ms "$moved")
    sleep 3
    say "$dialer" hangup
    fin_r=$(wait_line "$TMP/R.out" '"event":"call_stats".*"final":true' 10)
    fin_p=$(wait_line "$TMP/Q.out" '"event":"call_stats".*"final":true' 10)
    gap_r=$(python3 "$HERE/wav-gaps.py" "$TMP/R.wav" 600 1000 2>&1)
    gap_p=$(python3 "$HERE/wav-gaps.py" "$TMP/Q.wav" 1000 1000 2>&1)
    # The last statistics before the final ones: the path after the move.
    path_r=$(grep '"event":"call_stats"' "$TMP/R.out" | grep -v '"final":true' | tail -1)
    path_p=$(grep '"event":"call_stats"' "$TMP/Q.out" | grep -v '"final":true' | tail -1)
    remote_p=$(field "$path_p" remote)
    local ok=1
    [[ -n $fin_r && -n $fin_p ]] || { FAILS+=("$name: the call did not end with final stats"); ok=0; }
    [[ $gap_r == ok* ]] || { FAILS+=("$name: the roamer heard: $gap_r"); ok=0; }
    [[ $gap_p == ok* ]] || { FAILS+=("$name: the public side heard: $gap_p"); ok=0; }
    [[ $(field "$path_r" path) == direct && $(field "$path_p" path) == direct ]] ||
        { FAILS+=("$name: not direct after the move: roamer $(field "$path_r" path), public $(field "$path_p" path)"); ok=0; }
    [[ $remote_p == "${WANIP[$to]}":* ]] ||
        { FAILS+=("$name: the public side's path ends at $remote_p, not at ${WANIP[$to]}"); ok=0; }
    if [[ -z $nat_ev ]]; then
        FAILS+=("$name: no NAT re-detection after the move"); ok=0
    elif [[ $(field "$nat_ev" public) != "${WANIP[$to]}":* ]]; then
        FAILS+=("$name: NAT re-detection says public $(field "$nat_ev" public)"); ok=0
    fi
    printf '%-40s dial->two-way audio %5s ms  path after: %s -> %s  silence: roamer heard %s; public heard %s; NAT again after %s ms: %s/%s %s\n' \
        "$name" "$t_active" "$(field "$path_p" path)" "$remote_p" "${gap_r#ok: }" "${gap_p#ok: }" "$nat_ms" \
        "$(field "$nat_ev" mapping)" "$(field "$nat_ev" filtering)" "$(field "$nat_ev" public)"
    grep -h '"event":"path_changed"' "$TMP/R.out" "$TMP/Q.out" | sed 's/^/    /'
    stop R Q
    if ((ok == 0)); then
        KEEP_TMP=1; mkdir -p "$TMP/fail-$N"; cp "$TMP"/[RQ].out "$TMP"/[RQ].log "$TMP"/[RQ].wav "$TMP/fail-$N/" 2>/dev/null
    fi
}

run_call roamer public rtra rtrb
run_call public roamer rtrb rtrc

echo "roam: $N calls in $((($(date +%s%N) - T0) / 1000000000)) s"
if ((${#FAILS[@]})); then
    printf 'FAIL: %s\n' "${FAILS[@]}"
    KEEP_TMP=1
    exit 1
fi
echo "roam: every call followed the roamer to its new network with no silence over 1 s"
