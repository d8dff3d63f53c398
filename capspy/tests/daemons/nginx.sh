# nginx started by its init script (workers run as www-data); curl fetches its page over loopback.
/etc/init.d/nginx start || exit 1
for i in $(seq 20); do
    curl -fsS --max-time 2 http://127.0.0.1/ 2>/dev/null | grep -q 'Welcome to nginx' && exit 0
    sleep 0.25
done
curl -fsS --max-time 2 http://127.0.0.1/
exit 1
