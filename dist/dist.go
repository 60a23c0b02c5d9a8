// Package dist holds what puts UVS on a host as a service: the systemd
// unit uvs.service, embedded here for `director install`, and the Grafana
// dashboard grafana/uvs.json. The tests check the unit with
// systemd-analyze, run the director with no more capabilities than the
// unit grants, and check that every series the dashboard queries is one
// the director exports.
package dist

import (
	_ "embed"
	"fmt"
	"path/filepath"
	"strings"
)

//go:embed uvs.service
var unit string

// The paths the unit names as written, which Unit replaces.
const (
	// Binary is where the unit runs the director from.
	Binary = "/usr/local/sbin/director"
	// EtcDir holds the rules file, EtcDir/rules.
	EtcDir = "/etc/uvs"
)

// UnitName is the unit's file name.
const UnitName = "uvs.service"

// Unit returns the unit with the director at binary and the rules file in
// etcDir. Both must be clean absolute paths of plain characters (letters,
// digits, / . _ + -): systemd would split a path at a space and expand %
// and $ in it.
func Unit(binary, etcDir string) ([]byte, error) {
	for _, p := range []string{binary, etcDir} {
		if err := plainPath(p); err != nil {
			return nil, err
		}
	}
	s := strings.ReplaceAll(unit, Binary, binary)
	s = strings.ReplaceAll(s, EtcDir+"/", strings.TrimSuffix(etcDir, "/")+"/")
	return []byte(s), nil
}

func plainPath(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("%q: want a clean absolute path", p)
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("/._+-", r):
		default:
			return fmt.Errorf("%q: %q cannot be written in a unit's command line as it is; want letters, digits and / . _ + -", p, r)
		}
	}
	return nil
}
