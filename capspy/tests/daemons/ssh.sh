# sshd started by its init script; a key login of user tester over loopback runs `id -un`.
/etc/init.d/ssh start || exit 1
for i in $(seq 20); do
    out=$(timeout 5 ssh -o BatchMode=yes -o ConnectTimeout=2 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR -i /root/.ssh/id_ed25519 tester@127.0.0.1 id -un 2>&1)
    [ "$out" = tester ] && exit 0
    sleep 0.25
done
echo "$out"
exit 1
