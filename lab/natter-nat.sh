#!/usr/bin/env bash
# natter's own STUN server and NAT detection in the real-NAT lab.
#
# In the srv namespace: a natter authority (198.51.100.1:7700, TCP) and a natter
# supernode on 198.51.100.1:7710 with its second address 198.51.100.2 and alternate
# port 7711 (RFC 5780: it answers on .1:7710, .1:7711, .2:7710, .2:7711). Then, from
# every client environment, all environments in parallel:
#   (a) coturn's turnutils_stunclient and turnutils_natdiscovery -m / -f against OUR
#       supernode: the reflexive address must be the router's public address, and the
#       mapping/filtering natdiscovery reports must be the environment's NAT type;
#   (b) a real `natter --headless --json` client (logged in as its own user) measures
#       its NAT at login, over the same UDP socket its overlay link uses: once against
#       our supernode, once against coturn (`--stun-server 198.51.100.1:3478`), and its
#       `nat` event must name the environment's mapping and filtering (or udp_blocked).
# NAT state (conntrack, cone sets) is flushed before every step.
#
# Two ways to use it:
#   lab/natter-nat.sh                 standalone (root): builds a lab, starts coturn,
#                                     runs the checks, tears everything down
#   source lab/natter-nat.sh; natter_nat_check
#                                     inside lab/check-nat-types.sh, whose lab and coturn
#                                     (198.51.100.1:3478, alt .2:3479) are up; sets
#                                     NATTER_NAT_FAILS
# The natter binary: $NATTER_BIN, else target/debug/natter (brought up to date with
# `cargo test --no-run` when cargo is installed).

_NN_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NN_SN_PORT=7710
NN_SN_ALT_PORT=7711
NN_AUTH_PORT=7700
NN_COTURN=198.51.100.1:3478

# natter's nat event values -> the table's abbreviations
_nn_short_mapping() {
    case "$1" in
        none) echo NoNAT ;; endpoint_independent) echo EIM ;; address_dependent) echo ADM ;;
        address_port_dependent) echo APDM ;; dependent) echo "ADM|APDM" ;; *) echo "?" ;;
    esac
}
_nn_short_filtering() {
    case "$1" in
        endpoint_independent) echo EIF ;; address_dependent) echo ADF ;;
        address_port_dependent) echo APDF ;; *) echo "?" ;;
    esac
}
_nn_field() {   # JSON-LINE KEY -> string/number/bool value (serde_json writes flat keys)
    sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" <<<"$1" | head -1
}

natter_nat_bin() {
    if [[ -n "${NATTER_BIN:-}" ]]; then echo "$NATTER_BIN"; return 0; fi
    local repo target
    repo=$(cd "$_NN_HERE/.." && pwd)
    target=${CARGO_TARGET_DIR:-$repo/target}
    # Up to date with the source when cargo is here. Built as `cargo test`
    # builds it (an integration test needs the binary), so that right after
    # `cargo test` this is a no-op: a plain `cargo build` resolves dependency
    # features without the dev-dependencies and would rebuild everything.
    if command -v cargo >/dev/null; then
        (cd "$repo" && cargo test -q --no-run --test it) >&2 || return 1
    fi
    [[ -x "$target/debug/natter" ]] || { echo "no $target/debug/natter (run cargo build)" >&2; return 1; }
    echo "$target/debug/natter"
}

# Stop the authority and the supernode (SIGTERM, then wait for them).
natter_nat_stop() {
    local p
    for p in ${NN_PIDS:-}; do kill "$p" 2>/dev/null; done
    for p in ${NN_PIDS:-}; do wait "$p" 2>/dev/null; done
    NN_PIDS=""
}

# Wait until FILE has a line matching REGEX (up to SECS).
_nn_wait_line() {
    local f=$1 re=$2 secs=$3 i
    for ((i = 0; i < secs * 20; i++)); do
        grep -qE "$re" "$f" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Start the authority and the supernode in srv, make one account per environment.
natter_nat_setup() {
    NN_DIR="$TMP/natter"
    mkdir -p "$NN_DIR"
    NN_BIN=$(natter_nat_bin) || { echo "no natter binary" >&2; return 1; }
    local srv ip1 ip2 key e
    srv=$(netlab_srv_ns); ip1=$(netlab_srv_ip 1); ip2=$(netlab_srv_ip 2)
    printf '[authority]\nlisten = "%s:%s"\nregistrations_per_hour_per_address = 0\n' "$ip1" "$NN_AUTH_PORT" >"$NN_DIR/authority.toml"
    ip netns exec "$srv" "$NN_BIN" --config "$NN_DIR/authority.toml" --data-dir "$NN_DIR/authority" \
        --authority >"$NN_DIR/authority.out" 2>"$NN_DIR/authority.log" </dev/null &
    NN_PIDS="$!"
    _nn_wait_line "$NN_DIR/authority.out" '^listening on' 30 || { echo "natter authority did not start:"; cat "$NN_DIR/authority.log"; return 1; }
    key=$(sed -n 's/^authority public key: //p' "$NN_DIR/authority.out")
    # The supernode runs a relay, as deployed ones do: it then takes clients
    # over TCP too, which is how a UDP-blocked client attaches (and learns
    # that UDP, not the supernode, is the problem).
    printf '[login]\nserver = "%s:%s"\nauthority_key = "%s"\n[overlay]\nbootstrap = []\n[relay]\nsecret = "nat-lab-secret-%s"\n' \
        "$ip1" "$NN_AUTH_PORT" "$key" "$$" >"$NN_DIR/client.toml"
    # Accounts: sn1 (supernode role) and one user per environment, in parallel.
    local names=(sn1) pids=() n
    for e in "${NETLAB_ENVS[@]}"; do names+=("u-$e"); done
    for n in "${names[@]}"; do
        (
            pw="$n-lab-password"
            echo "$pw" | ip netns exec "$srv" "$NN_BIN" --config "$NN_DIR/client.toml" --data-dir "$NN_DIR/$n" \
                register "$n" --password-stdin >/dev/null 2>>"$NN_DIR/accounts.log" || exit 1
            if [[ $n == sn1 ]]; then
                "$NN_BIN" --config "$NN_DIR/authority.toml" --data-dir "$NN_DIR/authority" \
                    admin set-role sn1 supernode >/dev/null 2>>"$NN_DIR/accounts.log" || exit 1
            fi
            echo "$pw" | ip netns exec "$srv" "$NN_BIN" --config "$NN_DIR/client.toml" --data-dir "$NN_DIR/$n" \
                login "$n" --password-stdin >/dev/null 2>>"$NN_DIR/accounts.log" || exit 1
        ) &
        pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n" || { echo "natter accounts failed:"; cat "$NN_DIR/accounts.log"; return 1; }; done
    ip netns exec "$srv" "$NN_BIN" --config "$NN_DIR/client.toml" --data-dir "$NN_DIR/sn1" \
        --log-level natter=info --supernode --listen "$ip1:$NN_SN_PORT" \
        --alt-address "$ip2" --alt-port "$NN_SN_ALT_PORT" >"$NN_DIR/sn1.out" 2>"$NN_DIR/sn1.log" </dev/null &
    NN_PIDS="$NN_PIDS $!"
    _nn_wait_line "$NN_DIR/sn1.out" '^STUN' 30 || { echo "natter supernode did not start:"; cat "$NN_DIR/sn1.log"; return 1; }
    local socks
    socks=$(ip netns exec "$srv" ss -Hlun | grep -cE "198\.51\.100\.[12]:77(10|11) ")
    ((socks == 4)) || { echo "natter supernode: $socks of 4 STUN sockets bound"; return 1; }
    echo "natter supernode: $(sed -n 's/^STUN //p' "$NN_DIR/sn1.out")"
}

# coturn's stunclient against our supernode from ENV: "ok" when the first answer
# names the router's public address, origin .1:7710 and other address .2:7711;
# "blocked" when nothing answers.
_nn_stunclient() {
    local env=$1 out refl
    out=$(netlab_exec "$env" timeout 3 turnutils_stunclient -p "$NN_SN_PORT" -L "$(netlab_ip "$env")" "$(netlab_srv_ip 1)" 2>&1)
    echo "$out" >"$NN_DIR/$env.stunclient"
    refl=$(sed -n 's/.*UDP reflexive addr: \([0-9.]*\):[0-9]*$/\1/p' <<<"$out" | head -1)
    if [[ -z "$refl" ]]; then echo blocked; return; fi
    if [[ "$refl" == "$(netlab_wan_ip "$env")" ]] &&
        grep -q "Response origin: : $(netlab_srv_ip 1):$NN_SN_PORT" <<<"$out" &&
        grep -q "Other addr: : $(netlab_srv_ip 2):$NN_SN_ALT_PORT" <<<"$out"; then
        echo ok
    else
        echo "bad($refl)"
    fi
}

# A natter client in ENV, logged in as u-ENV, attaching to our supernode; prints the
# first `nat` JSON line (or nothing within 25 s). Extra args go to natter.
_nn_detect() {
    local env=$1 tag=$2 pid line; shift 2
    local out="$NN_DIR/$env.$tag.json"
    netlab_exec "$env" timeout 25 "$NN_BIN" --config "$NN_DIR/client.toml" --data-dir "$NN_DIR/u-$env" \
        --log-level "${NN_LOG:-natter=info}" --headless --json --bootstrap "$(netlab_srv_ip 1):$NN_SN_PORT" "$@" \
        >"$out" 2>"$NN_DIR/$env.$tag.log" </dev/null &
    pid=$!
    _nn_wait_line "$out" '"event":"nat"' 25
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    # $pid is the subshell around `ip netns exec`: natter outlives it. The
    # data dir's lock names natter's PID and is free once it has exited,
    # so the next run on this data dir can take it.
    local lock="$NN_DIR/u-$env/natter.lock"
    if ! flock -n "$lock" true 2>/dev/null; then
        kill "$(cat "$lock")" 2>/dev/null
        flock -w 10 "$lock" true
    fi
    grep -m1 '"event":"nat"' "$out"
}

# "MAPPING/FILTERING TIME" from a nat JSON line, e.g. "EIM/APDF 2113ms" or "blocked/blocked 2001ms"
_nn_verdict() {
    local j=$1
    [[ -n "$j" ]] || { echo "none"; return; }
    local ms; ms=$(_nn_field "$j" duration_ms)
    if [[ "$(_nn_field "$j" udp_blocked)" == true ]]; then echo "blocked/blocked ${ms}ms"; return; fi
    echo "$(_nn_short_mapping "$(_nn_field "$j" mapping)")/$(_nn_short_filtering "$(_nn_field "$j" filtering)") ${ms}ms"
}

# Everything for one environment; writes $NN_DIR/$env.row
_nn_env() {
    local env=$1 sc m f ours coturn
    netlab_flush_conntrack "$env"; sc=$(_nn_stunclient "$env")
    netlab_flush_conntrack "$env"; m=$(classify_mapping "$(netlab_exec "$env" timeout 30 turnutils_natdiscovery -m -p "$NN_SN_PORT" -L "$(netlab_ip "$env")" "$(netlab_srv_ip 1)" 2>&1 | tee "$NN_DIR/$env.natdisc-m")")
    netlab_flush_conntrack "$env"; f=$(classify_filtering "$(netlab_exec "$env" timeout 30 turnutils_natdiscovery -f -p "$NN_SN_PORT" -L "$(netlab_ip "$env")" "$(netlab_srv_ip 1)" 2>&1 | tee "$NN_DIR/$env.natdisc-f")")
    netlab_flush_conntrack "$env"; ours=$(_nn_verdict "$(_nn_detect "$env" ours)")
    netlab_flush_conntrack "$env"; coturn=$(_nn_verdict "$(_nn_detect "$env" coturn --stun-server "$NN_COTURN")")
    printf '%s\t%s\t%s\t%s\t%s\n' "$sc" "$m" "$f" "$ours" "$coturn" >"$NN_DIR/$env.row"
}

# Run every environment in parallel and print the table. Sets NATTER_NAT_FAILS.
natter_nat_check() {
    NATTER_NAT_FAILS=0
    local t0 t1 e sc m f ours coturn want verdict pids=()
    t0=$(date +%s%N)
    echo
    echo "natter: our supernode's STUN (coturn's tools against it) and our client's NAT detection"
    if ! natter_nat_setup; then NATTER_NAT_FAILS=1; natter_nat_stop; return 1; fi
    for e in "${NETLAB_ENVS[@]}"; do
        _nn_env "$e" &
        pids+=($!)
    done
    for e in "${pids[@]}"; do wait "$e"; done
    natter_nat_stop
    printf '\n%-15s %-16s %-11s %-19s %-24s %-24s %s\n' ENV EXPECTED STUNCLIENT "NATDISCOVERY->OURS" "NATTER->OUR SUPERNODE" "NATTER->COTURN" RESULT
    printf '%-15s %-16s %-11s %-19s %-24s %-24s %s\n' --- -------- ---------- ------------------ --------------------- -------------- ------
    for e in "${NETLAB_ENVS[@]}"; do
        IFS=$'\t' read -r sc m f ours coturn <"$NN_DIR/$e.row"
        want="${EXP_MAP[$e]}/${EXP_FLT[$e]}"
        verdict=PASS
        local sc_want=ok; [[ $e == udpblocked ]] && sc_want=blocked
        [[ "$sc" == "$sc_want" && "$m/$f" == "$want" && "${ours% *}" == "$want" && "${coturn% *}" == "$want" ]] || verdict=FAIL
        printf '%-15s %-16s %-11s %-19s %-24s %-24s %s\n' "$e" "$want" "$sc" "$m/$f" "$ours" "$coturn" "$verdict"
        if [[ $verdict == FAIL ]]; then
            NATTER_NAT_FAILS=$((NATTER_NAT_FAILS + 1))
            {
                echo "---- $e"
                for x in stunclient natdisc-m natdisc-f ours.json coturn.json; do
                    echo "-- $x"; cat "$NN_DIR/$e.$x" 2>/dev/null
                done
            } >>"$NN_DIR/failures.log"
        fi
    done
    t1=$(date +%s%N)
    echo "natter checks: $(((t1 - t0) / 1000000)) ms (all environments in parallel)"
    if [[ -s "$NN_DIR/failures.log" ]]; then echo; echo "output of failed natter cases:"; cat "$NN_DIR/failures.log"; fi
    return 0
}

# --- standalone ---------------------------------------------------------------
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -u
    if [[ $EUID -ne 0 ]]; then echo "natter-nat: must run as root" >&2; exit 2; fi
    for c in ip ss nft conntrack turnserver turnutils_natdiscovery timeout; do
        command -v "$c" >/dev/null || { echo "missing $c: apt-get install -y nftables conntrack coturn iproute2" >&2; exit 2; }
    done
    export NETLAB_PREFIX=${NETLAB_PREFIX:-ntrnn$$-}
    [[ -n "${NATTER_NAT_KEEP:-}" ]] || unset NETLAB_ENV_LIST
    # shellcheck source=netlab.sh
    source "$_NN_HERE/netlab.sh"
    TMP=$(mktemp -d /tmp/natter-nat.XXXXXX)
    TURN_PID=""
    _nn_cleanup() {
        natter_nat_stop
        if [[ -n "$TURN_PID" ]]; then kill "$TURN_PID" 2>/dev/null; wait "$TURN_PID" 2>/dev/null; fi
        netlab_down
        if [[ -n "${NATTER_NAT_KEEP:-}" ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
    }
    trap _nn_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    declare -A EXP_MAP=([public]=NoNAT [fullcone]=EIM [restricted]=EIM [portrestricted]=EIM [symmetric]=APDM [udpblocked]=blocked)
    declare -A EXP_FLT=([public]=EIF [fullcone]=EIF [restricted]=ADF [portrestricted]=APDF [symmetric]=APDF [udpblocked]=blocked)
    classify_mapping() {
        if grep -q 'No NAT!' <<<"$1"; then echo NoNAT
        elif grep -q 'Address and Port Dependent Mapping' <<<"$1"; then echo APDM
        elif grep -q 'Address Dependent Mapping' <<<"$1"; then echo ADM
        elif grep -q 'Endpoint Independent Mapping' <<<"$1"; then echo EIM
        elif ! grep -q 'RFC 5780 response' <<<"$1" && grep -q 'STUN receive timeout' <<<"$1"; then echo blocked
        else echo '?'; fi
    }
    classify_filtering() {
        if grep -q 'Address and Port Dependent Filtering' <<<"$1"; then echo APDF
        elif grep -q 'Address Dependent Filtering' <<<"$1"; then echo ADF
        elif grep -q 'Endpoint Independent Filtering' <<<"$1"; then echo EIF
        elif ! grep -q 'RFC 5780 response' <<<"$1" && grep -q 'STUN receive timeout' <<<"$1"; then echo blocked
        else echo '?'; fi
    }
    netlab_up || exit 1
    echo "netlab up: ${NETLAB_UP_MS} ms (prefix $NETLAB_PREFIX)"
    ip netns exec "$(netlab_srv_ns)" turnserver -n --no-auth --stun-only \
        --listening-ip 198.51.100.1 --listening-ip 198.51.100.2 \
        --listening-port 3478 --alt-listening-port 3479 --no-tls --no-dtls --no-cli \
        --userdb "$TMP/turndb" --pidfile "$TMP/turnserver.pid" --log-file stdout --simple-log \
        >"$TMP/turnserver.log" 2>&1 &
    TURN_PID=$!
    for _ in $(seq 50); do
        n=$(ip netns exec "$(netlab_srv_ns)" ss -lun 2>/dev/null | grep -cE '198\.51\.100\.[12]:347[89]')
        ((n >= 4)) && break
        sleep 0.1
    done
    natter_nat_check
    echo
    if ((NATTER_NAT_FAILS)); then echo "natter-nat: $NATTER_NAT_FAILS failure(s)"; exit 1; fi
    echo "natter-nat: our STUN server and our NAT detection agree with every environment"
    exit 0
fi
