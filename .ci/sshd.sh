#!/usr/bin/env bash
# A throwaway sshd on loopback for the hosts= tests (perf_load generators over a real ssh gateway).
#
#   eval "$(.ci/sshd.sh)"      # start (or reuse) it; exports BRIDGEPERF_TEST_SSH
#   .ci/sshd.sh stop           # stop it and remove its directory
#
# Idempotent: a second call finds the running server and prints the same exports. Installs
# openssh-server from the distribution's packages when sshd is missing. The server listens on
# 127.0.0.1 only, on a free port, with a host key and a user key made here (nothing of the
# machine's own ssh setup is read or changed), accepts only that key for the current user, and
# logs to its directory. BRIDGEPERF_TEST_SSH is an execnet spec reaching it
# ("ssh=127.0.0.1//ssh_config=<dir>/ssh_config"); the tests add //python=<their interpreter>.
set -euo pipefail

base="${BRIDGEPERF_SSHD_DIR:-${TMPDIR:-/tmp}/bridgeperf-sshd-$(id -u)}"
user="$(id -un)"

say() { echo "sshd.sh: $*" >&2; }

find_sshd() {
    local candidate
    for candidate in "$(command -v sshd 2>/dev/null || true)" /usr/sbin/sshd /usr/local/sbin/sshd; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            readlink -f "$candidate"
            return 0
        fi
    done
    return 1
}

running() { [ -f "$base/sshd.pid" ] && kill -0 "$(cat "$base/sshd.pid")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
    if running; then
        kill "$(cat "$base/sshd.pid")" 2>/dev/null || true
    fi
    rm -rf "$base"
    say "stopped"
    exit 0
fi

if ! sshd=$(find_sshd); then
    say "sshd not found: installing openssh-server from the distribution's packages"
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { say "need root or sudo to install openssh-server"; exit 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q openssh-server >&2 || {
        $sudo apt-get update -q >&2
        $sudo apt-get install -y -q openssh-server >&2
    }
    sshd=$(find_sshd) || { say "openssh-server installed but sshd still not found"; exit 1; }
fi
command -v ssh >/dev/null 2>&1 || { say "no ssh client"; exit 1; }

# Reuse a server this script started before, if it is still up.
if [ -f "$base/env" ] && running; then
    cat "$base/env"
    exit 0
fi

# Start from scratch (a stale directory from a crashed run included).
if running; then
    kill "$(cat "$base/sshd.pid")" 2>/dev/null || true
fi
rm -rf "$base"
mkdir -p "$base"
chmod 700 "$base"

ssh-keygen -q -t ed25519 -N "" -C bridgeperf-test-host -f "$base/host_key"
ssh-keygen -q -t ed25519 -N "" -C bridgeperf-test-user -f "$base/id_ed25519"
cp "$base/id_ed25519.pub" "$base/authorized_keys"
chmod 600 "$base/authorized_keys"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat >"$base/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $port
HostKey $base/host_key
PidFile $base/sshd.pid
AuthorizedKeysFile $base/authorized_keys
AllowUsers $user
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
LogLevel INFO
EOF

cat >"$base/ssh_config" <<EOF
Host 127.0.0.1 localhost
    HostName 127.0.0.1
    Port $port
    User $user
    IdentityFile $base/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $base/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
EOF
hostkey=$(cut -d' ' -f1,2 "$base/host_key.pub")
{
    echo "[127.0.0.1]:$port $hostkey"
    echo "[localhost]:$port $hostkey"
} >"$base/known_hosts"

# sshd run by root needs its privilege separation directory
if [ "$(id -u)" = 0 ]; then
    mkdir -p /run/sshd
    chmod 755 /run/sshd
fi
"$sshd" -t -f "$base/sshd_config" || { say "sshd rejected its configuration"; exit 1; }
"$sshd" -f "$base/sshd_config" -E "$base/sshd.log"

for _ in $(seq 1 100); do
    if ssh -F "$base/ssh_config" 127.0.0.1 true >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
if ! ssh -F "$base/ssh_config" 127.0.0.1 true >&2; then
    say "cannot log in to the sshd on 127.0.0.1:$port"
    tail -n 20 "$base/sshd.log" >&2 || true
    exit 1
fi

{
    echo "export BRIDGEPERF_TEST_SSH='ssh=127.0.0.1//ssh_config=$base/ssh_config'"
    echo "export BRIDGEPERF_TEST_SSH_LOG=$base/sshd.log"
} >"$base/env"
say "$("$sshd" -V 2>&1 | head -n 1 || true) on 127.0.0.1:$port for $user, keys in $base"
cat "$base/env"
