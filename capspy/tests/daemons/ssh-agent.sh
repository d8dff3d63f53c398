# openssh-client's maintainer script, as dpkg-reconfigure runs it: it gives /usr/bin/ssh-agent to
# group _ssh and sets its set-group-ID bit again (chmod 2755 as root, who is not in _ssh: an
# FSETID check whose denial only clears the bit). Then ssh-agent serves ssh-add over its socket.
dpkg-reconfigure -f noninteractive openssh-client || exit 1
stat -c 'ssh-agent mode %a' /usr/bin/ssh-agent
eval "$(ssh-agent -s)" >/dev/null || exit 1
ssh-add -q /root/.ssh/id_ed25519 && ssh-add -l | grep -q ED25519
rc=$?
kill "$SSH_AGENT_PID"
exit $rc
