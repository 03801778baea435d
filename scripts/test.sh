#!/usr/bin/env bash
# Run natter's whole test suite on a fresh Debian machine: installs what the
# build and the labs need (as root, or with sudo), then checks formatting,
# lints and runs every test. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and the tests use (libasound2-dev: sound cards
# through cpal/ALSA; cmake: the bundled libopus; coturn: the relay tests run
# our TURN client against turnserver and turnutils_uclient against ours;
# tmux: the TUI test in a real terminal, tests/it/tui_tmux.rs; python3: the
# lab's check of a recorded call for gaps, lab/wav-gaps.py; systemd:
# systemd-analyze verifies the units in config/systemd; prometheus:
# promtool checks the metrics endpoints, tests/it/metrics.rs; postgresql:
# two authorities share one database, tests/it/authority_ha.rs).
PACKAGES=(build-essential pkg-config libasound2-dev cmake coturn tmux python3 systemd prometheus postgresql)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from rustup first" >&2; exit 1; }

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --lib
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked 2>&1 | tee "$log"

# The real-NAT lab needs root (network namespaces and nftables); it
# installs nftables, conntrack, coturn, netcat, tayga and unbound itself.
if [ "$(id -u)" -eq 0 ]; then
    lab/check-nat-types.sh
    # Every ordered pair of the six environments connects with real
    # processes (about 90 s); uses the debug binary `cargo test` built.
    lab/ice-matrix.sh
    # The networks people have: CGNAT (two NATs), two users behind one
    # NAT, a sequential-port symmetric NAT; calls with audio both ways in
    # every ordered pair (about 6 min).
    lab/nat-envs.sh
    # A caller and a callee move to another NAT mid-call (about 1 min).
    lab/roam.sh
    # A conference of four: public, port-restricted, symmetric and
    # UDP-blocked (through the relays, TURN over TCP); every recording
    # holds every other tone (about 40 s).
    lab/conf-nat.sh
    # IPv6: IPv6-only, IPv4-only, dual-stack, behind an IPv6 firewall and
    # behind NAT64/DNS64 (tayga, unbound); every ordered pair calls with
    # audio both ways, direct wherever a family in common reaches (about
    # 2 min; installs tayga and unbound).
    lab/v6.sh
    # File transfer: direct (cone to public) and through a relay (cone
    # to symmetric), the sender and then the receiver SIGKILLed
    # mid-transfer and restarted on their ports; each resumes and the
    # bytes match (about 15 s).
    lab/files-nat.sh
else
    echo "skipping the real-NAT lab: it needs root"
fi

# One closing line for the whole run.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
