# vsftpd started by its init script; curl logs in as tester with a password over loopback FTP
# and downloads a file from the home folder.
/etc/init.d/vsftpd start || exit 1
for i in $(seq 20); do
    [ "$(curl -fsS --max-time 2 ftp://tester:capspy-test@127.0.0.1/hello.txt 2>/dev/null)" = hello ] && exit 0
    sleep 0.25
done
curl -fsS --max-time 2 ftp://tester:capspy-test@127.0.0.1/hello.txt
exit 1
