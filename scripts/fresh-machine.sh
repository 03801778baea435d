#!/usr/bin/env bash
# Prove the README's first command on a bare Debian: debootstrap a minimal
# root (plus sudo, which a Debian desktop or server has), mount the host's
# Rust toolchain into it read-only, copy this checkout in, and run the
# README's "Try it" command there with `demo` replaced by `demo --once`.
# Nothing else is installed by hand: if the README's command misses a
# package, this fails. Needs root and debootstrap; takes 10-20 minutes
# (download, then a release build), so it is not part of scripts/test.sh.
#
# Usage: scripts/fresh-machine.sh [WORKDIR]   (default: a new temp dir)
# KEEP=1 keeps the root afterwards for a look inside.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

[ "$(id -u)" -eq 0 ] || { echo "needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
}

# The README's first command: the line in the first ```sh block after
# "## Try it".
cmd=$(awk '/^## Try it/ {t=1} t && /^```sh/ {b=1; next} b && /^```/ {exit} b {print}' README.md)
[ -n "$cmd" ] || { echo "no command found under '## Try it' in README.md" >&2; exit 1; }
case "$cmd" in
*"-- demo"*) ;;
*) echo "the README's first command does not end in '-- demo': $cmd" >&2; exit 1 ;;
esac
cmd="${cmd%-- demo*}-- demo --once"
echo "README command: $cmd"

# The Debian mirror and suite this host uses (so no host name is written
# here).
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
. /etc/os-release
suite=${VERSION_CODENAME:-bookworm}

work=${1:-$(mktemp -d /var/tmp/natter-fresh.XXXXXX)}
root=$work/root
mounts=()
cleanup() {
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
    if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $root"; fi
}
trap cleanup EXIT
bind() { # bind SRC DST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
    [ "${3:-}" != ro ] || mount -o remount,bind,ro "$2"
}

start=$(date +%s)
echo "debootstrap $suite from the host's mirror into $root"
debootstrap --variant=minbase --include=sudo,ca-certificates "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
# The network as this host sees it: its resolver, and the extra trust
# anchors of a TLS-inspecting proxy if it has any (the package registries
# are reached through it).
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null || true
echo "root ready in $(($(date +%s) - start)) s"

# /proc and /dev for the build and the demo; the host's toolchain read-only.
mount -t proc proc "$root/proc"
mounts+=("$root/proc")
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"
bind "${RUSTUP_HOME:-$HOME/.rustup}" "$root/opt/rustup" ro
bind "${CARGO_HOME:-$HOME/.cargo}/bin" "$root/opt/cargo-bin" ro
# The checkout as a fresh clone would have it (tracked files only).
mkdir -p "$root/home/natter"
git -C "$repo" archive --format=tar HEAD | tar -x -C "$root/home/natter"

start=$(date +%s)
rc=0
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb \
    PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo RUSTUP_TOOLCHAIN="$(rustup show active-toolchain | cut -d' ' -f1)" \
    /bin/bash -c "cd /home/natter && set -o pipefail && ( $cmd ) 2>&1 | tee /root/run.log | tail -40" </dev/null || rc=$?
echo "README command in the fresh root: exit $rc after $(($(date +%s) - start)) s"
exit $rc
