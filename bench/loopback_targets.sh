# Sourced by the bench scripts that run inside a network namespace of their own: brings its
# loopback up, lets every group open ICMP sockets, and writes "$WORK/cfg.yml", a config of N
# loopback targets at 1 s (127.0.0.1, 127.0.0.2, ...) with its session store in $WORK.
# Usage: . bench/loopback_targets.sh; loopback_targets WORK N
loopback_targets() {
    local work=$1 n=$2 i
    ip link set lo up
    sysctl -q -w net.ipv4.ping_group_range="0 2147483647"
    {
        printf 'defaults:\n  interval: 1s\n  timeout: 1s\nsessions:\n  database: %s/sessions.db\ntargets:\n' "$work"
        for ((i = 1; i <= n; i++)); do
            printf '  - host: 127.%d.%d.%d\n' $(((i >> 16) & 255)) $(((i >> 8) & 255)) $((i & 255))
        done
    } > "$work/cfg.yml"
}
