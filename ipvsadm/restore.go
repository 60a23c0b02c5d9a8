package ipvsadm

import (
	"io"
	"strings"
)

// maxRestore bounds what -R reads, so a runaway pipe cannot exhaust memory.
const maxRestore = 64 << 20

// restore runs -R: every line of stdin is one ipvsadm invocation (a
// leading "ipvsadm" word allowed, "#" starting a comment). All lines are
// checked first and then applied in a single update: a bad line means
// nothing is applied.
func (r *runner) restore(stdin io.Reader) error {
	if stdin == nil {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(stdin, maxRestore))
	if err != nil {
		return &exit{code: 255, msg: "restore: " + err.Error()}
	}
	var cmds []*command
	for line := range strings.Lines(string(data)) {
		args := restoreArgs(line)
		if len(args) == 0 {
			continue
		}
		c, e := parse(args, true)
		if e != nil {
			return e
		}
		switch c.kind {
		case cmdHelp:
			io.WriteString(r.out, usage)
			return nil
		case cmdVersion:
			io.WriteString(r.out, version+"\n")
			return nil
		}
		cmds = append(cmds, c)
	}
	if len(cmds) == 0 {
		return nil
	}
	return r.exec(cmds)
}

// restoreArgs splits one -R line into arguments.
func restoreArgs(line string) []string {
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	f := strings.Fields(line)
	if len(f) > 0 && f[0] == "ipvsadm" {
		f = f[1:]
	}
	return f
}
