#!/usr/bin/env bash
# File transfer through real NATs: a file goes directly where the NATs let
# a direct path through and through a supernode's TURN relay where they do
# not, each transfer is cut by a SIGKILL (the sender's in one, the
# receiver's in the other) and resumed by a restarted process, and the
# received file must be the sent one byte for byte (sha256; natter itself
# checks its BLAKE2b hash before it moves the file into place).
#
#  ns <P>wan: bridge br0 --+-- <P>srv     198.51.100.1 + .2 (authority, two supernodes, relays)
#                          +-- <P>public  198.51.100.11     (no NAT)
#                          +-- <P>rcone   198.51.100.41 | 10.88.0.1  port-restricted NAT
#                          |      `-- <P>cone  10.88.0.2
#                          +-- <P>rsym    198.51.100.42 | 10.89.0.1  symmetric NAT (random ports)
#                                 `-- <P>sym   10.89.0.2
#
# Transfers (u-cone sends; the senders' rate is capped so a kill lands
# mid-transfer):
#   1. u-cone -> u-public, direct: the sender is killed after a quarter and
#      restarted; it resumes where the receiver's record says.
#   2. u-cone -> u-sym, relayed (a port-restricted NAT and a symmetric one
#      have no direct path): the receiver is killed after a quarter and
#      restarted; it resumes from its own record.
# Prints each transfer's path, the offset it resumed from and its rate;
# exit status 1 on a wrong path, a failed transfer or different bytes.
#
# usage: lab/files-nat.sh [--bin PATH]   (root; namespaces are fnat<pid>-*)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=files-nat
# shellcheck source=args.sh
source "$HERE/args.sh"
lab_args "$@"

P=${FILES_NAT_PREFIX:-fnat$$-}
NSS=(wan srv public rcone cone rsym sym)
# shellcheck source=wanlab.sh
source "$HERE/wanlab.sh"

ROUTERS=(rcone rsym)
declare -A CLIENT=([rcone]=cone [rsym]=sym)
declare -A NAT=([rcone]=portrestricted [rsym]=symmetric)
declare -A WANIP=([rcone]=198.51.100.41 [rsym]=198.51.100.42)
declare -A LAN=([rcone]=10.88.0 [rsym]=10.89.0)

build() {
    local r c
    lab_build_namespaces || return 1
    on_wan public ppub 198.51.100.11 || return 1
    for r in "${ROUTERS[@]}"; do
        c=${CLIENT[$r]}
        on_wan "$r" "p$r" "${WANIP[$r]}" || return 1
        link "$r" lan0 "$c" lan0 && addr "$r" lan0 "${LAN[$r]}.1/24" && addr "$c" lan0 "${LAN[$r]}.2/24" || return 1
        ipn "$(ns "$c")" route add default via "${LAN[$r]}.1" || return 1
        nat_rules "$r" "${NAT[$r]}" "${WANIP[$r]}" "${LAN[$r]}.2" || return 1
    done
}

T0=$(date +%s%N)
build || { echo "$LAB: building the lab failed" >&2; exit 1; }
echo "$LAB: lab up in $((($(date +%s%N) - T0) / 1000000)) ms (prefix $P)"

PARTS=(public cone sym)
lab_start_servers "${PARTS[@]}"
# The sender's cap: a kill after a quarter lands mid-transfer.
printf '[files]\nmax_rate = 2000000\n' >>"$CFG"

FAILS=()
fail() { FAILS+=("$*"); echo "FAIL: $*"; }
finish() {
    stop "${PARTS[@]}"
    if ((${#FAILS[@]})); then
        printf 'FAILED: %s\n' "${FAILS[@]}"
        KEEP_TMP=1
        exit 1
    fi
    echo "$LAB: both transfers on their expected path, resumed after the kill, the bytes the same"
    exit 0
}

declare -A PORT=([public]=24001 [cone]=24002 [sym]=24003)
# (Re)start u-NAME's client, its events in $TMP/NAME.out (appended).
start() {   # NAME
    rm -f "$TMP/$1.in"
    headless "$1" "$1" "${PORT[$1]}"
}
# SIGKILL u-NAME's client (the one process in its namespace; $PID_NAME is
# the subshell that started it).
kill9() {   # NAME
    local pid fd
    eval "pid=\$PID_$1; fd=\$FD_$1"
    # shellcheck disable=SC2046
    kill -9 $(ip netns pids "$(ns "$1")") 2>/dev/null
    wait "$pid" 2>/dev/null
    exec {fd}>&-
    mv "$TMP/$1.out" "$TMP/$1.out.killed"
}
# The first event line of FILE matching every PATTERN, waiting up to SECS.
event() {   # FILE SECS PATTERN...
    local f=$1 n=$(($2 * 20)) l p; shift 2
    while ((n-- > 0)); do
        l=$(cat "$f" 2>/dev/null)
        for p in "$@"; do l=$(grep -F -- "$p" <<<"$l"); done
        [[ -n $l ]] && { head -1 <<<"$l"; return 0; }
        sleep 0.05
    done
    return 1
}
# Wait until FILE reports at least BYTES of a transfer.
progress_past() {   # FILE BYTES SECS
    local n=$(($3 * 20)) b
    while ((n-- > 0)); do
        b=$(grep -F '"event":"file_progress"' "$1" 2>/dev/null | sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' | sort -n | tail -1)
        [[ -n $b ]] && ((b >= $2)) && return 0
        sleep 0.05
    done
    return 1
}

for u in "${PARTS[@]}"; do start "$u"; done
for u in "${PARTS[@]}"; do
    wait_line "$TMP/$u.out" '"event":"published"' 30 >/dev/null || fail "u-$u never published"
done
((${#FAILS[@]})) && finish
for u in public sym; do
    say cone "add u-$u files for you"
    event "$TMP/$u.out" 20 '"event":"contact_request"' >/dev/null || fail "u-$u got no contact request"
    say "$u" "accept u-cone"
    event "$TMP/cone.out" 20 '"event":"contact_added"' "\"user\":\"u-$u\"" >/dev/null || fail "u-cone and u-$u are not contacts"
done
((${#FAILS[@]})) && finish

# One transfer: u-cone sends SIZE bytes to TO; VICTIM is killed after a
# quarter and restarted; WANT is the expected path.
transfer() {   # TO SIZE VICTIM WANT
    local to=$1 size=$2 victim=$3 want=$4 src dest o id t0 st resumed d ms path sum_a sum_b
    src=$TMP/send-$to.bin
    dest=$TMP/recv-$to/file.bin
    head -c "$size" /dev/urandom >"$src"
    t0=$(date +%s%N)
    say cone "send-file u-$to $src"
    o=$(event "$TMP/$to.out" 30 '"event":"file_offered"') || { fail "u-$to: no file offer"; return; }
    id=$(field "$o" id)
    say "$to" "file accept $id $dest"
    path=$(field "$(event "$TMP/cone.out" 30 '"event":"peer_connected"' "\"user\":\"u-$to\"")" path)
    progress_past "$TMP/$to.out" $((size / 4)) 60 || { fail "u-$to: no progress past a quarter"; return; }
    kill9 "$victim"
    start "$victim"
    wait_line "$TMP/$victim.out" '"event":"published"' 30 >/dev/null || { fail "u-$victim did not come back"; return; }
    st=$(event "$TMP/$victim.out" 60 '"event":"file_started"' "\"id\":\"$id\"") || { fail "u-$victim: the transfer did not start again"; return; }
    resumed=$(field "$st" resumed_from)
    d=$(event "$TMP/$to.out" 120 '"event":"file_done"' "\"id\":\"$id\"") ||
        { fail "u-$to: the transfer did not finish ($(grep -F file_failed "$TMP/$to.out" | tail -1))"; return; }
    ms=$((($(date +%s%N) - t0) / 1000000))
    sum_a=$(sha256sum <"$src" | cut -d' ' -f1)
    sum_b=$(sha256sum <"$dest" 2>/dev/null | cut -d' ' -f1)
    [[ $sum_a == "$sum_b" ]] || fail "u-cone -> u-$to: the received file differs (sha256 $sum_b, sent $sum_a)"
    [[ $path == "$want" ]] || fail "u-cone -> u-$to: want $want, got ${path:-no path}"
    ((resumed > 0)) || fail "u-cone -> u-$to: started again from 0 after u-$victim's kill"
    printf '  u-cone -> u-%-6s %8d bytes  path %-8s  u-%s killed, resumed from %8d  %5d ms in all (%s KB/s with the restart)  sha256 %s\n' \
        "$to" "$size" "${path:-none}" "$victim" "${resumed:-0}" "$ms" "$((size / (ms > 0 ? ms : 1)))" "${sum_b:0:16}"
}

echo "transfers (sender capped at 2 MB/s; the relay's per-user share is 1 MB/s):"
transfer public 8000000 cone direct
transfer sym 4000000 sym relayed
finish
