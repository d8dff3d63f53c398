# capspy's integration scenarios, shared by the VM's /init and the native run of
# `cargo xtask vm-test` (which runs this file with busybox sh and the initramfs's bin/ first in
# PATH, so that both sides trace the same busybox and capprobe binaries).
#
# Executed with hooks as arguments, it runs every scenario with each hook. Sourced with no
# arguments, it only defines the functions. Needs CAPSPY (the binary) and WORK (a scratch folder).
# Output, one line each, parsed by xtask/src/vm/console.rs:
#   CAPSPY-RESULT <scenario> <hook> <exit status> <report JSON on one line | ->
#   CAPSPY-LOG <scenario> <hook> <a line capspy or the command printed>
#   CAPSPY-DOCTOR <label> <a line of `capspy doctor`>
#   CAPSPY-DOCTOR-EXIT <label> <exit status>

# run SCENARIO HOOK CMD...: one `capspy run`.
run() {
    scenario=$1 hook=$2
    shift 2
    report=$WORK/$scenario.$hook.json
    rm -f "$report"
    "$CAPSPY" run --hook "$hook" --format json --output "$report" -- "$@" >"$WORK/log" 2>&1
    status=$?
    sed "s/^/CAPSPY-LOG $scenario $hook /" "$WORK/log"
    printf 'CAPSPY-RESULT %s %s %s ' "$scenario" "$hook" "$status"
    # Pretty JSON has newlines only between tokens: dropping them keeps it valid.
    if [ -s "$report" ]; then tr -d '\n' <"$report"; else printf -- '-'; fi
    echo
}

# doctor LABEL
doctor() {
    "$CAPSPY" doctor >"$WORK/log" 2>&1
    status=$?
    sed "s/^/CAPSPY-DOCTOR $1 /" "$WORK/log"
    echo "CAPSPY-DOCTOR-EXIT $1 $status"
}

# A process of another user, outside the traced cgroup: reading its /proc/PID/stat makes a
# noaudit SYS_PTRACE check (ptrace_may_access with PTRACE_MODE_NOAUDIT).
start_other_user() {
    # Its own output elsewhere: it must not hold the native run's stdout pipe open.
    capprobe as-uid 4242 sleep 300 >/dev/null 2>&1 &
    OTHER=$!
    tries=0
    until grep -q '^Uid:[[:space:]]*4242' "/proc/$OTHER/status" 2>/dev/null || [ $tries -ge 100 ]; do
        sleep 0.05
        tries=$((tries + 1))
    done
}

# every_run HOOK: all `capspy run` scenarios with one hook.
every_run() {
    # A fresh file owned by root, so that every hook sees the same chown checks.
    rm -f "$WORK/file"
    echo x >"$WORK/file"
    run ping "$1" ping -c1 -W2 127.0.0.1
    run chown "$1" chown 4242 "$WORK/file"
    run true "$1" true
    # The grandchild outlives the shell: capspy must wait for the cgroup to empty.
    run children "$1" sh -c "ping -c1 -W2 127.0.0.1 >/dev/null; (sleep 0.3; chown 4243 $WORK/file) & exit 0"
    run proc-stat "$1" cat "/proc/$OTHER/stat"
    # One check each through a different caller of cap_capable (see capprobe.c).
    run bset-drop "$1" capprobe bset-drop
    run securebits "$1" capprobe securebits
    run capset "$1" capprobe capset
    run mmap-zero "$1" capprobe mmap-zero
}

if [ $# -gt 0 ]; then
    start_other_user
    trap 'kill $OTHER 2>/dev/null' EXIT
    for hook in "$@"; do every_run "$hook"; done
fi
