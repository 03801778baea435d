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
#                          |      `-- <P>roamer: lan0 to rtra (10.84.0.2), lan1 to rtrb
#                          |          (10.85.0.2), lan2 to rtrc (10.86.0.2); one up at a time
#                          +-- <P>rtrd    198.51.100.34 | 10.87.0.1  symmetric (APDM+APDF)
#                                 `-- <P>sympeer 10.87.0.2        (the other party, behind a NAT)
#
# Calls (both sides play a tone and record; the callee auto-answers):
#   1. roamer calls public (the roamer controls ICE) and moves rtra -> rtrb
#      (port-restricted to full cone);
#   2. public calls roamer (the roamer is controlled) and moves rtrb -> rtrc
#      (full cone to symmetric);
#   3. roamer calls sympeer (the roamer controls ICE) and moves rtrb -> rtrc:
#      full cone vs symmetric goes direct, symmetric vs symmetric needs a
#      relay (TURN on the supernodes, the lab's `[relay]` secret);
#   4. sympeer calls roamer (the roamer is controlled), the same move.
# Each call runs 3 s, the move, then until the roamer's NAT detection has run
# again (at most 20 s) and 3 s more. Checks: both recordings carry the other's
# tone with no silence over 1 s (lab/wav-gaps.py); after the move calls 1 and
# 2 are direct on both ends, the other side's path ending at the roamer's new
# public address, and calls 3 and 4 are relayed on both ends; a `nat` event with
# reason "local address changed" giving the roamer's new public address. Prints dial-to-two-way-audio and the silence around the move;
# exit status 1 on any failure.
#
# usage: lab/roam.sh [--bin PATH]   (root; namespaces are cxroam-<pid>-*)
#        ROAM_CALLS="3" runs only the calls of those numbers (a fast inner loop)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=roam
# shellcheck source=args.sh
source "$HERE/args.sh"
lab_args "$@"

P=${ROAM_PREFIX:-cxroam-$$-}
NSS=(wan srv public rtra rtrb rtrc roamer rtrd sympeer)
# shellcheck source=wanlab.sh
source "$HERE/wanlab.sh"

# --- topology --------------------------------------------------------------------
# The roamer's uplinks: router, its LAN prefix, the roamer's interface.
declare -A LAN=([rtra]=10.84.0 [rtrb]=10.85.0 [rtrc]=10.86.0)
declare -A IFC=([rtra]=lan0 [rtrb]=lan1 [rtrc]=lan2)
declare -A WANIP=([rtra]=198.51.100.31 [rtrb]=198.51.100.32 [rtrc]=198.51.100.33)

build() {
    local r
    lab_build_namespaces || return 1
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
    # the other party of call 3, behind a symmetric NAT of its own
    on_wan rtrd prd 198.51.100.34 || return 1
    link rtrd lan0 sympeer lan0 || return 1
    addr rtrd lan0 10.87.0.1/24 || return 1
    addr sympeer lan0 10.87.0.2/24 || return 1
    ipn "$(ns sympeer)" route add default via 10.87.0.1 || return 1
    nat_rules rtrd symmetric 198.51.100.34 10.87.0.2 || return 1
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

lab_start_servers roamer public sympeer

# --- calls --------------------------------------------------------------------------------
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

FAILS=()
N=0
# CALLER CALLEE FROM TO PATH: one call, the roamer moving from router FROM to
# TO; PATH (direct or relayed) is the path both ends must be on after it.
run_call() {
    local caller=$1 callee=$2 from=$3 to=$4 want=$5 name t0 t_active act s_a moved nat_ev
    local gap_r gap_p fin_r fin_p path_r path_p remote_p cell other=$1
    [[ $other == roamer ]] && other=$callee
    N=$((N + 1))
    [[ -z ${ROAM_CALLS:-} || " $ROAM_CALLS " == *" $N "* ]] || return 0
    name="$caller -> $callee, roamer ${from} -> ${to}"
    join "$from" || { FAILS+=("$name: join $from"); return; }
    for r in rtra rtrb rtrc rtrd; do inns "$r" conntrack -F >/dev/null 2>&1; done
    inns rtrb nft flush set ip lab mapped 2>/dev/null
    rm -f "$TMP"/R.* "$TMP"/Q.*
    # R: the roamer, Q: the other party; the callee auto-answers.
    local r_flags=(--play tone:1000 --record "$TMP/R.wav") q_flags=(--play tone:600 --record "$TMP/Q.wav")
    if [[ $callee == roamer ]]; then r_flags+=(--auto-answer); else q_flags+=(--auto-answer); fi
    headless roamer R $((23000 + 2 * N)) "${r_flags[@]}"
    headless "$other" Q $((23001 + 2 * N)) "${q_flags[@]}"
    wait_line "$TMP/R.out" '"event":"published"' 20 >/dev/null
    wait_line "$TMP/Q.out" '"event":"published"' 20 >/dev/null
    local dialer=R
    [[ $caller != roamer ]] && dialer=Q
    t0=$(date +%s%N)
    say "$dialer" "call u-$callee"
    act=$(wait_line "$TMP/$dialer.out" '"event":"call_state".*"state":"active"' 20)
    t_active=$(ms "$t0")
    s_a=""
    [[ -n $act ]] && s_a=$(two_way_stats "$TMP/$dialer.out")
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
    [[ $gap_p == ok* ]] || { FAILS+=("$name: $other heard: $gap_p"); ok=0; }
    [[ $(field "$path_r" path) == "$want" && $(field "$path_p" path) == "$want" ]] ||
        { FAILS+=("$name: not $want after the move: roamer $(field "$path_r" path), $other $(field "$path_p" path)"); ok=0; }
    if [[ $want == direct && $remote_p != "${WANIP[$to]}":* ]]; then
        FAILS+=("$name: $other's path ends at $remote_p, not at ${WANIP[$to]}"); ok=0
    fi
    if [[ -z $nat_ev ]]; then
        FAILS+=("$name: no NAT re-detection after the move"); ok=0
    elif [[ $(field "$nat_ev" public) != "${WANIP[$to]}":* ]]; then
        FAILS+=("$name: NAT re-detection says public $(field "$nat_ev" public)"); ok=0
    fi
    printf '%-40s dial->two-way audio %5s ms  path after: %s -> %s  silence: roamer heard %s; other heard %s; NAT again after %s ms: %s/%s %s\n' \
        "$name" "$t_active" "$(field "$path_p" path)" "$remote_p" "${gap_r#ok: }" "${gap_p#ok: }" "$nat_ms" \
        "$(field "$nat_ev" mapping)" "$(field "$nat_ev" filtering)" "$(field "$nat_ev" public)"
    grep -h '"event":"path_changed"' "$TMP/R.out" "$TMP/Q.out" | sed 's/^/    /'
    stop R Q
    if ((ok == 0)); then
        KEEP_TMP=1; mkdir -p "$TMP/fail-$N"; cp "$TMP"/[RQ].out "$TMP"/[RQ].log "$TMP"/[RQ].wav "$TMP/fail-$N/" 2>/dev/null
    fi
}

run_call roamer public rtra rtrb direct
run_call public roamer rtrb rtrc direct
run_call roamer sympeer rtrb rtrc relayed
run_call sympeer roamer rtrb rtrc relayed

echo "roam: $N calls in $((($(date +%s%N) - T0) / 1000000000)) s"
if ((${#FAILS[@]})); then
    printf 'FAIL: %s\n' "${FAILS[@]}"
    KEEP_TMP=1
    exit 1
fi
echo "roam: every call followed the roamer to its new network (direct or relayed) with no silence over 1 s"
