#!/bin/sh
# Builds the root filesystem of the real-daemons test image as a tarball (file capabilities
# kept): debootstrap of the Debian release this machine runs, the daemons and their clients from
# its archive, started by nothing (policy-rc.d), and a user `tester` for the logins.
# Usage: build-rootfs.sh OUT.tar. The tests import OUT.tar; its name carries a hash of this file,
# so changing the package list below makes a new image.
set -eu
out=$1

packages="chrony dnsmasq bind9-dnsutils openssh-server openssh-client nginx curl vsftpd
    iputils-ping procps dbus libcap2-bin"

. /etc/os-release
release=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
# The archive this machine installs from (deb822 .sources or one-line .list), else Debian's.
mirror=${CAPSPY_DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -E '^[[:space:]]*(deb|URIs:)[[:space:]]' \
    | grep -oE 'https?://[^[:space:]]+/debian/?' | grep -v security | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "$(dirname "$out")/rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
debootstrap --variant=minbase "$release" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
# shellcheck disable=SC2086 # the list is split on purpose
chroot "$root" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $packages >"$work/apt.log" 2>&1 ||
    { tail -n 20 "$work/apt.log" >&2; exit 1; }
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/*

# tester logs in by password (FTP) and by key (ssh, root's key).
chroot "$root" useradd --create-home --shell /bin/bash tester
echo 'tester:capspy-test' | chroot "$root" chpasswd
echo hello >"$root/home/tester/hello.txt"
mkdir -p "$root/root/.ssh" "$root/home/tester/.ssh"
chroot "$root" ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
cp "$root/root/.ssh/id_ed25519.pub" "$root/home/tester/.ssh/authorized_keys"
chroot "$root" chown -R tester:tester /home/tester
chmod 700 "$root/home/tester/.ssh"

tar --xattrs --xattrs-include='security.capability' -C "$root" -cf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$out"
