# sshd started by its init script; a key login of user tester over loopback runs `id -un`.
/etc/init.d/ssh start || exit 1
for i in $(seq 40); do
    out=$(timeout 10 ssh -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i /root/.ssh/id_ed25519 \
        tester@127.0.0.1 id -un 2>&1)
    case $out in *'Connection refused'*) sleep 0.25 ;; *) break ;; esac
done
echo "$out"
[ "$out" = tester ]
