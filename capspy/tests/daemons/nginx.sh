# nginx started by its init script (workers run as www-data); curl fetches its page over loopback.
/etc/init.d/nginx start || exit 1
for i in $(seq 40); do
    out=$(curl -fsS --max-time 5 http://127.0.0.1/ 2>&1)
    [ $? = 7 ] || break # 7: not listening yet
    sleep 0.25
done
echo "$out" | grep -q 'Welcome to nginx' && exit 0
echo "$out"
exit 1
