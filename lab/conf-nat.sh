#!/usr/bin/env bash
# A conference through the relays in the kernel lab: four real natter
# processes, one on a public address and three behind real NATs, one of
# which drops every UDP datagram (its node attaches to the supernodes and
# reaches their relays over TCP only):
#
#  ns <P>wan: bridge br0 --+-- <P>srv     198.51.100.1 + .2 (authority, two supernodes + relays)
#                          +-- <P>public  198.51.100.11     u-public, no NAT
#                          +-- <P>rcone   198.51.100.41 | 10.88.0.1  port-restricted (EIM+APDF)
#                          |      `-- <P>cone     10.88.0.2           u-cone
#                          +-- <P>rsym    198.51.100.42 | 10.89.0.1  symmetric (APDM+APDF)
#                          |      `-- <P>sym      10.89.0.2           u-sym
#                          +-- <P>rblk    198.51.100.43 | 10.90.0.1  UDP blocked (TCP NATed)
#                                 `-- <P>blocked  10.90.0.2           u-blocked
#
# Each plays its own tone (public 440 Hz, cone 620, sym 830, blocked 1070)
# and records what it hears. u-public runs `conf start u-cone u-sym
# u-blocked`; the others auto-join. Once everyone has seen all four join,
# the conference runs 5 s. Checks:
#   - everyone names the same mixer, u-public (the only public address: the
#     mixer ranking puts a relay-only participant last, NAT class first);
#   - each leg's path, from both ends (the mixer's conference_stats per
#     participant, each participant's for its leg to the mixer): the
#     UDP-blocked participant's leg relayed, the others direct;
#   - every recording holds every other participant's tone, within 3 dB of
#     each other, and not its own (lab/wav-tones.py: levels over 100 ms
#     windows).
# Then u-public, the mixer, is killed (SIGKILL): the survivors must agree
# on a new mixer that is not the UDP-blocked one (a participant behind a
# relay is not picked while a direct one is in), run their legs to it (the
# UDP-blocked one relayed, the symmetric one relayed or direct as port
# prediction goes), hear each other again within 3 s of the silence, and,
# 6 s later, each recording must hold the other two survivors and no
# longer u-public's tone.
# Prints the paths, the levels, the time from `conf start` to every
# participant having seen all four join, and to every recording holding
# all the others. Exit status 1 on any failure (logs kept).
#
# usage: lab/conf-nat.sh [--bin PATH]   (root; namespaces are cfn<pid>-*)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=conf-nat
# shellcheck source=args.sh
source "$HERE/args.sh"
lab_args "$@"

P=${CONF_NAT_PREFIX:-cfn$$-}
NSS=(wan srv public rcone cone rsym sym rblk blocked)
# shellcheck source=wanlab.sh
source "$HERE/wanlab.sh"

# --- topology --------------------------------------------------------------------
ROUTERS=(rcone rsym rblk)
declare -A CLIENT=([rcone]=cone [rsym]=sym [rblk]=blocked)
declare -A NAT=([rcone]=portrestricted [rsym]=symmetric [rblk]=udpblocked)
declare -A WANIP=([rcone]=198.51.100.41 [rsym]=198.51.100.42 [rblk]=198.51.100.43)
declare -A LAN=([rcone]=10.88.0 [rsym]=10.89.0 [rblk]=10.90.0)

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
build || { echo "conf-nat: building the lab failed" >&2; exit 1; }
echo "conf-nat: lab up in $((($(date +%s%N) - T0) / 1000000)) ms (prefix $P)"

PARTS=(public cone sym blocked)
declare -A TONE=([public]=440 [cone]=620 [sym]=830 [blocked]=1070)
declare -A WHAT=([public]="no NAT" [cone]="port-restricted NAT" [sym]="symmetric NAT" [blocked]="UDP-blocked NAT")
lab_start_servers "${PARTS[@]}"

ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
# The last line of FILE holding every PATTERN (fixed strings).
last_with() {   # FILE PATTERN...
    local f=$1 in p; shift
    in=$(cat "$f" 2>/dev/null)
    for p in "$@"; do in=$(grep -F -- "$p" <<<"$in"); done
    [[ -n $in ]] && tail -1 <<<"$in"
}
# Wait up to SECS for a line of FILE holding every PATTERN; prints it.
wait_with() {   # FILE SECS PATTERN...
    local f=$1 n=$(($2 * 20)) l; shift 2
    while ((n-- > 0)); do
        l=$(last_with "$f" "$@") && { echo "$l"; return 0; }
        sleep 0.05
    done
    return 1
}

FAILS=()
fail() { FAILS+=("$*"); echo "FAIL: $*"; }

# --- the participants ----------------------------------------------------------------
port=24000
for u in "${PARTS[@]}"; do
    port=$((port + 1))
    flags=(--play "tone:${TONE[$u]}" --record "$TMP/$u.wav")
    [[ $u == public ]] || flags+=(--auto-answer)
    headless "$u" "$u" "$port" "${flags[@]}"
done
for u in "${PARTS[@]}"; do
    # A UDP-blocked node attaches over TCP after its UDP attempts time out.
    wait_line "$TMP/$u.out" '"event":"published"' 40 >/dev/null || fail "u-$u never published its presence"
done
# NAT detection, so that every member's reach is known when it joins.
for u in "${PARTS[@]}"; do
    n=$(wait_with "$TMP/$u.out" 20 '"event":"nat"')
    if [[ -n $n ]]; then
        printf '  u-%-8s %-20s NAT detected: mapping %s, filtering %s, udp_blocked %s, public %s\n' "$u" "(${WHAT[$u]})" \
            "$(field "$n" mapping)" "$(field "$n" filtering)" "$(field "$n" udp_blocked)" "$(field "$n" public)"
    else
        printf '  u-%-8s %-20s no NAT detection result yet\n' "$u" "(${WHAT[$u]})"
    fi
done
((${#FAILS[@]})) && { KEEP_TMP=1; exit 1; }

# Each one's own `joined` starts its media (and its recording): when.
for u in "${PARTS[@]}"; do
    (wait_with "$TMP/$u.out" 60 '"type":"joined"' "\"user\":\"u-$u\"" >/dev/null && date +%s%N >"$TMP/$u.tjoin") &
    PIDS+=($!)
done

t0=$(date +%s%N)
say public "conf start u-cone u-sym u-blocked"
for u in "${PARTS[@]}"; do
    for v in "${PARTS[@]}"; do
        wait_with "$TMP/$u.out" 30 '"type":"joined"' "\"user\":\"u-$v\"" >/dev/null ||
            fail "u-$u never saw u-$v join"
    done
done
t_all=$(date +%s%N)
ALL_JOINED=$(ms "$t0")
echo "conf-nat: everyone saw all four join $ALL_JOINED ms after \`conf start\`"
((${#FAILS[@]})) && { stop "${PARTS[@]}"; KEEP_TMP=1; exit 1; }
sleep 5

# --- phase 1 checks: the mixer and its legs ------------------------------------------
# The mixer: everyone's last word on it.
mixer_of() { field "$(last_with "$1" '"type":"mixer"')" mixer; }
for u in "${PARTS[@]}"; do
    m=$(mixer_of "$TMP/$u.out")
    echo "  u-$u: mixer ${m:-none}"
    [[ $m == u-public ]] || fail "u-$u says the mixer is ${m:-nobody}, want u-public (the only public address)"
done
# Each leg, from both ends: the mixer's statistics for the participant, the
# participant's for its leg to the mixer.
leg() {   # FILE PEER: path, remote end and packets received of the last statistics of that leg
    local s
    s=$(last_with "$1" '"event":"conference_stats"' "\"peer\":\"$2\"")
    [[ -n $s ]] || { echo "none - -"; return; }
    echo "$(field "$s" path) $(field "$s" remote) $(field "$s" packets_received)"
}
# MIXER PARTICIPANT WANT (direct, relayed or any): print the leg, check its path.
check_leg() {
    local mx=$1 u=$2 want=$3 pm rm km pp rp kp
    read -r pm rm km <<<"$(leg "$TMP/$mx$SUFFIX" "u-$u")"
    read -r pp rp kp <<<"$(leg "$TMP/$u$SUFFIX" "u-$mx")"
    printf '  u-%-7s <-> u-%-8s %-20s mixer end: %-8s %-21s %6s  participant end: %-8s %-21s %6s\n' \
        "$mx" "$u" "(${WHAT[$u]})" "$pm" "$rm" "$km" "$pp" "$rp" "$kp"
    case $want in
        any) [[ $pm != none && $pp != none && $pm == "$pp" ]] ||
            fail "u-$u's leg to u-$mx: got $pm at the mixer, $pp at u-$u" ;;
        *) [[ $pm == "$want" && $pp == "$want" ]] ||
            fail "u-$u's leg to u-$mx: want $want, got $pm at the mixer, $pp at u-$u" ;;
    esac
}
echo "legs (path, remote end, packets received; at the mixer's end and the participant's):"
SUFFIX=.out
check_leg public cone direct
check_leg public sym direct
check_leg public blocked relayed

# --- phase 2: the mixer dies ---------------------------------------------------------
# SIGKILL: no Leave, the survivors notice the silence. The next mixer by
# rank: a NATed one with UDP, never the UDP-blocked one; the others reach
# it through the relays where their NATs allow no other way.
SURV=(cone sym blocked)
declare -A SKIP
for u in "${SURV[@]}"; do SKIP[$u]=$(wc -l <"$TMP/$u.out"); done
# The natter process itself: $PID_public is the shell that started it.
victim=$(ip netns pids "$(ns public)")
t_leave=$(date +%s%N)
kill -9 $victim
wait "$PID_public" 2>/dev/null
exec {FD_public}>&-
# The first mixer event after SKIP lines of NAME's output that does not name u-public.
new_mixer() {   # NAME SKIP SECS
    local n=$(($3 * 20)) e
    while ((n-- > 0)); do
        e=$(tail -n +$(($2 + 1)) "$TMP/$1.out" | grep '"type":"mixer"' | grep -v '"mixer":"u-public"' | head -1)
        [[ -n $e ]] && { field "$e" mixer; return 0; }
        sleep 0.05
    done
    return 1
}
NEXT=""
for u in "${SURV[@]}"; do
    m=$(new_mixer "$u" "${SKIP[$u]}" 10)
    echo "  u-$u: mixer ${m:-none} $(ms "$t_leave") ms after u-public was killed"
    [[ -n $m ]] || { fail "u-$u: no new mixer after u-public died"; continue; }
    [[ $m != u-blocked ]] || fail "u-$u: the UDP-blocked participant mixes, while direct ones are in"
    [[ -z $NEXT || $NEXT == "$m" ]] || fail "u-$u: mixer $m, others say $NEXT"
    NEXT=${NEXT:-$m}
done
sleep 6
for u in "${SURV[@]}"; do
    tail -n +$((${SKIP[$u]} + 1)) "$TMP/$u.out" >"$TMP/$u.out2"
    m=$(mixer_of "$TMP/$u.out2")
    [[ $m == "$NEXT" ]] || fail "u-$u: mixer ${m:-none} at the end, want $NEXT"
done
if [[ $NEXT == u-cone || $NEXT == u-sym ]]; then
    echo "legs after u-public died:"
    SUFFIX=.out2
    mx=${NEXT#u-}
    for u in "${SURV[@]}"; do
        [[ $u == "$mx" ]] && continue
        if [[ $u == blocked ]]; then check_leg "$mx" "$u" relayed; else check_leg "$mx" "$u" any; fi
    done
fi
stop "${SURV[@]}"

# --- the recordings ------------------------------------------------------------------
# Every other tone, not one's own; when all were first heard; after the
# mixer left, the survivors hear each other and no longer u-public.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (a - b) / 1e9 }'; }
echo "recordings (levels over 100 ms windows, dB of full scale):"
HEARD_ALL=0
RECOVERED=0
for u in "${PARTS[@]}"; do
    others=()
    for v in "${PARTS[@]}"; do [[ $v == "$u" ]] || others+=("${TONE[$v]}"); done
    win=()
    [[ -s $TMP/$u.tjoin ]] && win=(--window "$(secs $((t_all + 1500000000)) "$(cat "$TMP/$u.tjoin")")" "$(secs $((t_leave - 300000000)) "$(cat "$TMP/$u.tjoin")")")
    r=$(python3 "$HERE/wav-tones.py" "$TMP/$u.wav" "${TONE[$u]}" "${others[@]}" "${win[@]}" 2>&1)
    echo "  u-$u, four in: $r"
    [[ $r == ok* ]] || fail "u-$u's recording with four in: $r"
    # From `conf start`: its own join (the recording's start), plus when
    # the recording first held everyone else.
    from=$(sed -n 's/.*all others from \([0-9.]*\) s.*/\1/p' <<<"$r")
    if [[ -n $from && -s $TMP/$u.tjoin ]]; then
        t=$((($(cat "$TMP/$u.tjoin") - t0) / 1000000 + $(awk -v s="$from" 'BEGIN { printf "%d", s * 1000 }')))
        ((t > HEARD_ALL)) && HEARD_ALL=$t
    fi
    [[ $u == public ]] && continue
    others=()
    for v in "${SURV[@]}"; do [[ $v == "$u" ]] || others+=("${TONE[$v]}"); done
    after=()
    [[ -s $TMP/$u.tjoin ]] && after=(--after "$(secs "$t_leave" "$(cat "$TMP/$u.tjoin")")")
    r=$(python3 "$HERE/wav-tones.py" "$TMP/$u.wav" "${TONE[$u]}" "${others[@]}" --gone "${TONE[public]}" "${after[@]}" 2>&1)
    echo "  u-$u, after u-public died: $r"
    [[ $r == ok* ]] || fail "u-$u's recording after u-public died: $r"
    # The issue's bound: the others hear each other again within 3 s.
    back=$(sed -n 's/.*all others again after \([0-9.]*\) s.*/\1/p' <<<"$r")
    [[ -n $back ]] && awk -v b="$back" 'BEGIN { exit !(b > 3.0) }' &&
        fail "u-$u heard the others again only ${back} s after the silence began (want at most 3 s)"
    [[ -n $back ]] && awk -v b="$back" -v w="$RECOVERED" 'BEGIN { exit !(b > w) }' && RECOVERED=$back
done

echo "conf-nat: join time: all joined ${ALL_JOINED} ms, every recording holding all the others ${HEARD_ALL} ms after \`conf start\` (100 ms windows)"
echo "conf-nat: mixer killed: the longest silence before a survivor heard the others again ${RECOVERED} s"
echo "conf-nat: done in $((($(date +%s%N) - T0) / 1000000000)) s"
if ((${#FAILS[@]})); then
    # What each one saw: joins, leaves (with why) and mixers, in order.
    for u in "${PARTS[@]}"; do
        echo "  u-$u saw: $(grep '"event":"conference"' "$TMP/$u.out" | grep -v '"type":"levels"' |
            sed -n 's/.*"type":"\([a-z]*\)".*/\1/p' | paste -sd' ' -)"
        grep '"event":"conference"' "$TMP/$u.out" | grep '"type":"\(left\|mixer\)"' |
            while read -r l; do echo "    $(field "$l" type) $(field "$l" user)$(field "$l" mixer) $(field "$l" reason) $(field "$l" failover)"; done
    done
    printf 'FAIL: %s\n' "${FAILS[@]}"
    KEEP_TMP=1
    exit 1
fi
echo "conf-nat: public, port-restricted, symmetric and UDP-blocked participants heard each other through u-public's mix, the UDP-blocked one through the relays; after u-public was killed, through ${NEXT}'s"
