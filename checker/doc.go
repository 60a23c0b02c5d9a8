// Package checker is keepalived's checker process for UVS: given the LVS
// part of a keepalived.conf (package keepalived), it puts the virtual
// services the file names into the director's rule table and keeps their
// real servers there as the health checks (package healthcheck) say. It is
// what `director run --keepalived FILE` runs.
//
// # keepalived's semantics
//
// From keepalived.conf(5) of keepalived 2.2.7 (Debian's package) and
// keepalived's ChangeLog (/usr/share/doc/keepalived/changelog.gz, up to
// 2.0.20), quoted where the code relies on them:
//
//   - At start every real server is in at its configured weight, unless
//     alpha ("On daemon startup assume that all RSs are down and
//     healthchecks failed"): then it is out until its checks pass. A real
//     server without checkers stays as it starts (keepalived warns that an
//     alpha one "will never be able to be activated").
//   - A failing real server is removed; with inhibit_on_failure ("Set
//     weight to 0 when healthchecker detects failure") it stays at weight 0,
//     so that its open connections finish. It is back at its weight after
//     its checks pass. A MISC_CHECK with misc_dynamic sets the weight while
//     the server is up.
//   - quorum is the "Minimum total weight of all live servers in the pool"
//     (default 1), hysteresis the weight units tolerated "when considering
//     quorum gain or loss" (default 0): the quorum is lost when the live
//     weight falls below quorum − hysteresis and gained when it reaches
//     quorum + hysteresis again (keepalived 1.2.9's fix of hysteresis ≥
//     quorum, which the parser enforces, shows the two thresholds).
//   - sorry_server: "RS to add to LVS topology when the quorum isn't
//     achieved. If a sorry server is configured, all real servers will be
//     brought down when the quorum is not achieved and be replaced with the
//     sorry server." So while the quorum is lost the live real servers are
//     taken out too (kept at weight 0 with inhibit_on_failure), and when it
//     is gained they return and the sorry server goes (kept at weight 0 with
//     sorry_server_inhibit). Without a sorry server the quorum only runs
//     the scripts (keepalived 1.2.1's ChangeLog: "In absence of a sorry
//     server, the logic is to not use quorum except to run commands when
//     quorum is gained or lost"). The sorry server may be one of the real
//     servers (keepalived 2.0.20: "allow a sorry server to be the same as a
//     real server"): while it serves as the sorry server, it is that.
//   - A quorum lost at start (alpha) puts the sorry server in at once
//     (keepalived 1.4.1: "Enable sorry server at startup if quorum down due
//     to alpha mode"); the quorum scripts run on changes only.
//   - notify_up and notify_down run when a real server's checks change its
//     state, quorum_up and quorum_down when the quorum changes; with omega
//     ("On daemon shutdown consider quorum and RS down notifiers for
//     execution"), Close runs notify_down for every live real server and
//     quorum_down if the quorum is up. Scripts are run without a shell,
//     split as misc_path is (healthcheck.SplitArgs), as the given user and
//     group, with ScriptTimeout to finish (SIGTERM to their process group,
//     then SIGKILL).
//   - A real server is checked at its own address (connect_ip and
//     connect_port default to the real server's), DR and TUN ones too.
//   - A virtual server is "identified by its IP address, protocol and port,
//     or the firewall mark and address family" (keepalived 2.0.19's
//     ChangeLog), a group one by its group's name: across a reload, a
//     virtual server with the same identity is the same one, whatever its
//     scheduler or persistence.
//
// # Sharing the table
//
// The checker edits only the services its file names, and in them only
// the real servers and sorry servers the file names: rules from ipvsadm
// (the control socket, --rules) live beside them in the one table, as
// they do beside keepalived in the kernel's. It adds its services at start
// (a service that is already there is an error) and at a reload (a
// service deleted meanwhile with ipvsadm -D comes back then); between
// reloads it changes real servers as the checks say, and a change an
// administrator made to one of them with ipvsadm lasts until the next
// check changes that virtual server.
//
// # Not done
//
// What package healthcheck does not do (SMTP_CHECK, ...; per-checker
// alpha beyond starting the real server down; bind_port; MISC_CHECK's
// user); smtp_alert; ha_suspend; keepalived's own removal of its services
// at shutdown (the director stops with them).
package checker
