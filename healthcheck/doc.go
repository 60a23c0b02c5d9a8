// Package healthcheck runs keepalived's checkers against real servers and
// says when one goes down or comes back: what `director run --keepalived`
// uses to take dead real servers out and put them back.
//
// Check makes one attempt of one checker (TCP_CHECK, HTTP_GET, SSL_GET,
// MISC_CHECK, DNS_CHECK). A Monitor runs the checkers of many targets on
// keepalived's schedule and calls back on each change; its Collector exports
// the state to Prometheus.
//
// # keepalived's semantics
//
// Facts are from keepalived.conf(5) of keepalived 2.2.7 (Debian's package)
// and keepalived's ChangeLog (/usr/share/doc/keepalived/changelog.gz, up to
// 2.0.20); each is quoted where the code relies on it. Briefly:
//
//   - A real server is up only while all its checkers are up (Monitor.update).
//   - An up checker that fails is retried retry times, delay_before_retry
//     apart, and goes down at the retry+1st failure in a row; a down checker
//     is not retried; one success brings it up, without waiting for
//     delay_loop (Monitor.record).
//   - Attempts repeat every delay_loop, a checker's own overriding the real
//     server's and the virtual server's (the parser resolves which; Spec
//     holds the one in force). The first is delayed by a random time up to
//     warmup, which defaults to delay_loop (Defaults, warmup).
//   - alpha starts a real server down (Monitor.Set).
//   - Defaults: delay_loop 60 s, connect_timeout 5 s, retry 1 (DNS_CHECK 3,
//     MISC_CHECK 0), delay_before_retry 1 s (HTTP_GET and SSL_GET 3 s,
//     DNS_CHECK delay_loop), misc_timeout delay_loop, HTTP status 200-299,
//     DNS type SOA and name "." (Defaults).
//   - MISC_CHECK runs misc_path split at unquoted blanks, without a shell;
//     on misc_timeout it gets SIGTERM, then SIGKILL; misc_dynamic maps exit
//     status 0 to up at the configured weight, 1 to down, 2-255 to up with
//     weight status − 2 (checkMisc).
//   - SSL_GET verifies no certificate and sends SNI only with enable_sni
//     (getURL).
//
// # Cost
//
// A checker between attempts is a runtime timer and a few hundred bytes: no
// goroutine. An attempt runs on a goroutine of its own while it lasts.
// BenchmarkMonitorTCP1000 runs 1000 TCP_CHECK targets with delay_loop 1 s
// against listeners in another namespace (veth), in a process of its own,
// and reads getrusage over 10 s: about 1000 checks per second cost 150-200
// µs of CPU each (user 60-95 µs, system 80-110 µs), that is 0.15-0.2 CPU
// seconds per second, 15-20 % of one core, with 2-7 goroutines and 20 MiB
// RSS (2-core machine, shared, load average 2-3). The system time includes
// kernel work of both ends of each handshake, which veth runs in the
// sender's context; across a real link the server's share is not the
// director's. Every few seconds for thousands of targets is a fraction of
// that: 5000 targets every 5 s is the same 1000 checks per second.
//
// # Not done
//
// keepalived's SMTP_CHECK, UDP_CHECK, PING_CHECK, BFD_CHECK and FILE_CHECK;
// HTTP_GET's regex, http_protocol (requests are HTTP/1.1 with
// "Connection: close"; keepalived's default is 1.0) and its slow recovery
// without fast_recovery (every attempt here fetches all urls); bind_port,
// bind_if and fwmark on checker sockets; MISC_CHECK's user; SSL_GET's
// client certificate and CA (the SSL block); per-checker alpha; smtp_alert
// and notify scripts (the caller gets the events).
package healthcheck
