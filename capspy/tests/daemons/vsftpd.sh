# vsftpd started by its init script; curl logs in as tester with a password over loopback FTP
# and downloads a file from the home folder.
/etc/init.d/vsftpd start || exit 1
for i in $(seq 40); do
    out=$(curl -sS --max-time 5 ftp://tester:capspy-test@127.0.0.1/hello.txt 2>&1)
    [ $? = 7 ] || break # 7: not listening yet
    sleep 0.25
done
echo "$out"
[ "$out" = hello ]
