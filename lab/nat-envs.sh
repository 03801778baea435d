#!/usr/bin/env bash
# The networks people really have, with real natter processes behind real
# kernel NATs (nftables), all inside network namespaces of one prefix:
#
#   ns <P>wan: bridge br0 --+-- <P>srv      198.51.100.1 + .2: authority :7700, supernodes :7710
#                           +-- <P>public   198.51.100.11: a public host (no NAT)
#                           +-- <P>cgn1     198.51.100.21 | 100.64.1.1/24  carrier NAT, symmetric (APDM+APDF)
#                           |      `-- <P>home1  100.64.1.2 | 10.81.0.1    home NAT, port-restricted (EIM+APDF)
#                           |             `-- <P>cgnsym   10.81.0.2
#                           +-- <P>cgn2     198.51.100.22 | 100.64.2.1/24  carrier NAT, full cone (EIM+EIF)
#                           |      `-- <P>home2  100.64.2.2 | 10.82.0.1    home NAT, full cone (EIM+EIF)
#                           |             `-- <P>cgncone  10.82.0.2
#                           +-- <P>shared   198.51.100.23 | 10.83.0.1/24  one home NAT (port-restricted),
#                           |      `-- LAN bridge: <P>samea 10.83.0.2, <P>sameb 10.83.0.3
#                           |                      hairpinning off (no dnat for its own public address)
#                           +-- <P>seqnat   198.51.100.24 | 10.87.0.1/24  symmetric NAT with sequential
#                                  `-- <P>symseq 10.87.0.2                ports (APDM+APDF, as many home
#                                                                         routers): port prediction
#
# The sequential symmetric NAT is one nftables rule: `snat to WAN : numgen
# inc mod 1000 map { 0 : 30000, 1 : 30001, ... }`. NAT rules run for the
# first packet of a new conntrack entry only, so every new destination
# address:port gets the next port (conntrack's filter is APDF). The map is
# there because `numgen inc offset 30000` as the port is not converted to
# network byte order (seen: ports 30000, 30001, ... came out as 12405,
# 12661, ..., steps of 256).
#
# For every ordered pair of environments (public, cgnsym, cgncone, samea,
# sameb, symseq), A calls B (B auto-answers with a 600 Hz tone, A plays 1 kHz, both
# record); the cell is the path (direct/relayed) and the time from `call` to
# A's call going active (ringing answered, peer link up, media keys set:
# audio starts both ways; A's stats then must count packets received).
# Every call's recordings are checked for the tone with no gap over 200 ms
# (lab/wav-gaps.py). Exit status 1 on any failed cell or a path
# that is not the expected one: direct everywhere except cgnsym (its
# carrier NAT is symmetric) against the port-restricted shared NAT or the
# sequential symmetric NAT, which may relay, and the same-NAT pair must be
# direct over the LAN (its remote address a 10.83.0.x one). symseq against
# the port-restricted shared NAT must be direct: port prediction.
#
# usage: lab/nat-envs.sh [--bin PATH]   (root; namespaces are dualstack-<pid>-*)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=nat-envs
# shellcheck source=args.sh
source "$HERE/args.sh"
lab_args "$@"

P=${NAT_ENVS_PREFIX:-dualstack-$$-}
NSS=(wan srv public cgn1 home1 cgnsym cgn2 home2 cgncone shared samea sameb seqnat symseq)
# shellcheck source=wanlab.sh
source "$HERE/wanlab.sh"

# --- topology --------------------------------------------------------------------
build() {
    lab_build_namespaces || return 1
    on_wan public ppub 198.51.100.11 || return 1
    # CGNAT 1: port-restricted home NAT behind a symmetric carrier NAT.
    on_wan cgn1 pcgn1 198.51.100.21 || return 1
    link cgn1 lan0 home1 wan0 && addr cgn1 lan0 100.64.1.1/24 && addr home1 wan0 100.64.1.2/24 || return 1
    ipn "$(ns home1)" route add default via 100.64.1.1 || return 1
    link home1 lan0 cgnsym lan0 && addr home1 lan0 10.81.0.1/24 && addr cgnsym lan0 10.81.0.2/24 || return 1
    ipn "$(ns cgnsym)" route add default via 10.81.0.1 || return 1
    nat_rules cgn1 symmetric 198.51.100.21 100.64.1.2 || return 1
    nat_rules home1 portrestricted 100.64.1.2 10.81.0.2 || return 1
    # CGNAT 2: full-cone home NAT behind a full-cone carrier NAT.
    on_wan cgn2 pcgn2 198.51.100.22 || return 1
    link cgn2 lan0 home2 wan0 && addr cgn2 lan0 100.64.2.1/24 && addr home2 wan0 100.64.2.2/24 || return 1
    ipn "$(ns home2)" route add default via 100.64.2.1 || return 1
    link home2 lan0 cgncone lan0 && addr home2 lan0 10.82.0.1/24 && addr cgncone lan0 10.82.0.2/24 || return 1
    ipn "$(ns cgncone)" route add default via 10.82.0.1 || return 1
    nat_rules cgn2 fullcone 198.51.100.22 100.64.2.2 || return 1
    nat_rules home2 fullcone 100.64.2.2 10.82.0.2 || return 1
    # One home NAT for two users: a LAN bridge in the router namespace.
    on_wan shared pshr 198.51.100.23 || return 1
    ipn "$(ns shared)" link add lan0 type bridge || return 1
    ipn "$(ns shared)" link set lan0 up && addr shared lan0 10.83.0.1/24 || return 1
    link shared la samea lan0 && ipn "$(ns shared)" link set la master lan0 || return 1
    link shared lb sameb lan0 && ipn "$(ns shared)" link set lb master lan0 || return 1
    addr samea lan0 10.83.0.2/24 && addr sameb lan0 10.83.0.3/24 || return 1
    ipn "$(ns samea)" route add default via 10.83.0.1 || return 1
    ipn "$(ns sameb)" route add default via 10.83.0.1 || return 1
    nat_rules shared portrestricted 198.51.100.23 10.83.0.2 || return 1
    # A symmetric NAT with sequential ports.
    on_wan seqnat pseq 198.51.100.24 || return 1
    link seqnat lan0 symseq lan0 && addr seqnat lan0 10.87.0.1/24 && addr symseq lan0 10.87.0.2/24 || return 1
    ipn "$(ns symseq)" route add default via 10.87.0.1 || return 1
    nat_rules seqnat sequential 198.51.100.24 10.87.0.2 || return 1
}

T0=$(date +%s%N)
build || { echo "nat-envs: building the lab failed" >&2; exit 1; }
echo "nat-envs: lab up in $((($(date +%s%N) - T0) / 1000000)) ms (prefix $P)"

ENVS=(public cgnsym cgncone samea sameb symseq)
lab_start_servers "${ENVS[@]}"

# --- one call per ordered pair ------------------------------------------------------------
flush() {
    local r
    for r in cgn1 home1 cgn2 home2 shared seqnat; do
        inns "$r" conntrack -F >/dev/null 2>&1
    done
    inns cgn2 nft flush set ip lab mapped 2>/dev/null
    inns home2 nft flush set ip lab mapped 2>/dev/null
}

# A random symmetric mapping (the carrier NAT of cgnsym) against an address-
# and port-dependent filter (the shared port-restricted NAT, the sequential
# symmetric NAT) needs a relay, unless port prediction wins; every other
# pair must go direct (symseq against a port-restricted NAT by prediction).
relay_allowed() {
    [[ $1 == cgnsym && ($2 == same* || $2 == symseq) ]] || [[ $2 == cgnsym && ($1 == same* || $1 == symseq) ]]
}

declare -A CELL
WRONG=()
N=0
run_pair() {   # A B
    local a=$1 b=$2 t0 t1 act s_a path remote fin_a fin_b gap_a gap_b ok=1
    N=$((N + 1))
    flush
    rm -f "$TMP"/A.* "$TMP"/B.*
    headless "$b" B $((22000 + 2 * N)) --auto-answer --play tone:600 --record "$TMP/B.wav"
    headless "$a" A $((22001 + 2 * N)) --play tone:1000 --record "$TMP/A.wav"
    wait_line "$TMP/B.out" '"event":"published"' 20 >/dev/null
    wait_line "$TMP/A.out" '"event":"published"' 20 >/dev/null
    t0=$(date +%s%N)
    say A "call u-$b"
    # Two-way audio: A's call is active and its stats show packets both ways.
    act=$(wait_line "$TMP/A.out" '"event":"call_state".*"state":"active"' 20)
    t1=$(date +%s%N)
    s_a=""
    [[ -n $act ]] && s_a=$(two_way_stats "$TMP/A.out")
    if [[ -z $s_a ]]; then
        CELL[$a,$b]="FAIL"
        WRONG+=("$a -> $b: no two-way audio")
        ok=0
    else
        path=$(field "$s_a" path); remote=$(field "$s_a" remote)
        CELL[$a,$b]="$path $(((t1 - t0) / 1000000))"
        sleep 3
        say A hangup
        fin_a=$(wait_line "$TMP/A.out" '"event":"call_stats".*"final":true' 10)
        fin_b=$(wait_line "$TMP/B.out" '"event":"call_stats".*"final":true' 10)
        gap_a=$(python3 "$HERE/wav-gaps.py" "$TMP/A.wav" 600 200 2>&1)
        gap_b=$(python3 "$HERE/wav-gaps.py" "$TMP/B.wav" 1000 200 2>&1)
        if [[ -z $fin_a || -z $fin_b || $gap_a != ok* || $gap_b != ok* ]]; then
            WRONG+=("$a -> $b: recordings: A heard: ${gap_a:-none}; B heard: ${gap_b:-none}")
            CELL[$a,$b]+="!audio"
            ok=0
        fi
        # The same-NAT pair: direct over the LAN, never through the NAT or a relay.
        if [[ " $a $b " == *" samea "* && " $a $b " == *" sameb "* ]]; then
            if [[ $path != direct || $remote != 10.83.0.* ]]; then
                WRONG+=("$a -> $b: same NAT, want direct over the LAN, got $path to $remote")
                ok=0
            fi
        elif [[ $path != direct ]] && ! relay_allowed "$a" "$b"; then
            WRONG+=("$a -> $b: want direct, got $path")
            ok=0
        fi
    fi
    stop A B
    if ((ok == 0)); then
        mkdir -p "$TMP/wrong/$a-$b"
        cp "$TMP"/[AB].out "$TMP"/[AB].log "$TMP"/[AB].wav "$TMP/wrong/$a-$b/" 2>/dev/null
    fi
    printf '%-8s -> %-8s %-14s remote %s\n' "$a" "$b" "${CELL[$a,$b]}" "${remote:-}"
}

lab_matrix nat-envs 20 \
    "(cells: path and ms from \`call\` to the caller's call active; audio both ways checked after)" \
    "every call on its expected path (direct, or relayed where the NATs allow no other) with audio both ways"
