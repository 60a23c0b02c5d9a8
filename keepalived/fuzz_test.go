package keepalived

import (
	"errors"
	"testing"
	"testing/fstest"

	"uvs/service"
)

// FuzzParse feeds a configuration and a file it may include (as inc.conf
// or conf.d/inc.conf) to ParseFS. It must not panic; an error must name a
// line; what it accepts must give a rule table that ipvsadm's checks (the
// service package's AddService and AddDest) accept, with every real server
// of every key in it.
func FuzzParse(f *testing.F) {
	f.Add(rs("TCP_CHECK {\n}"), "")
	f.Add("include inc.conf\n", vs("real_server 198.18.1.2 80 {\nweight 2\n}"))
	f.Fuzz(func(t *testing.T, conf, inc string) {
		fsys := fstest.MapFS{
			"keepalived.conf":  {Data: []byte(conf)},
			"inc.conf":         {Data: []byte(inc)},
			"conf.d/inc.conf":  {Data: []byte(inc)},
			"conf.d/empty.cfg": {Data: nil},
		}
		file, warns, err := ParseFS(fsys, "keepalived.conf")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Pos.File == "" || e.Pos.Line < 1 {
				t.Fatalf("error without a position: %v", err)
			}
			if file != nil || warns != nil {
				t.Fatalf("a result came with the error %v", err)
			}
			return
		}
		for _, w := range warns {
			if w.Pos.File == "" || w.Pos.Line < 1 {
				t.Fatalf("warning without a position: %v", w)
			}
		}
		cfg, err := file.Config()
		if err != nil {
			t.Fatalf("accepted, but Config: %v", err)
		}
		// Rebuild the table through the service package's checks, and check
		// that each key has each real server.
		check := service.NewConfig()
		for _, s := range cfg.Services {
			if err := check.AddService(s); err != nil {
				t.Fatalf("service %v: %v", s.Key, err)
			}
			for _, d := range s.Dests {
				if err := check.AddDest(s.Key, d); err != nil {
					t.Fatalf("service %v, real server %v: %v", s.Key, d.AddrPort(), err)
				}
			}
		}
		n := 0
		for _, vs := range file.VirtualServers {
			keys, err := file.Keys(vs)
			if err != nil {
				t.Fatalf("Keys: %v", err)
			}
			for _, k := range keys {
				s := cfg.Service(k)
				if s == nil || len(s.Dests) != len(vs.Reals) {
					t.Fatalf("service %v: %+v, want %d real servers", k, s, len(vs.Reals))
				}
				n++
			}
		}
		if n != len(cfg.Services) {
			t.Fatalf("%d services for %d keys", len(cfg.Services), n)
		}
	})
}
