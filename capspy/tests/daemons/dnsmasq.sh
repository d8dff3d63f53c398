# dnsmasq started by its init script as a DNS and DHCP server; dig asks it over loopback. It
# drops to the dnsmasq user keeping NET_ADMIN and NET_RAW (DHCP) with a raw capset.
printf 'address=/capspy.test/192.0.2.7\ndhcp-range=127.0.0.50,127.0.0.60\n' > /etc/dnsmasq.d/capspy.conf
/etc/init.d/dnsmasq start || exit 1
for i in $(seq 20); do
    [ "$(dig +short +time=1 +tries=1 @127.0.0.1 capspy.test)" = 192.0.2.7 ] && exit 0
    sleep 0.25
done
dig +time=1 +tries=1 @127.0.0.1 capspy.test
exit 1
