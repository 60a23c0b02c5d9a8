package keepalived

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// token is one word of the configuration. Braces are tokens of their own
// (unless quoted), so "TCP_CHECK {connect_timeout 3}" reads the same as the
// three-line form.
type token struct {
	text   string
	quoted bool // some of it was inside quotes: never a brace or keyword of the lexer
	pos    Pos
	first  bool // first token on its line: a statement's arguments end before it
}

func (t token) isOpen() bool  { return !t.quoted && t.text == "{" }
func (t token) isClose() bool { return !t.quoted && t.text == "}" }

// Limits that keep a hostile or broken configuration (the fuzzer's) from
// taking unbounded time; a real site is far below them.
const (
	maxFiles = 1000 // files read, counting each inclusion
)

// lexer reads a file and the files it includes into one token stream, as
// keepalived does: an include is replaced by the included files' text, so a
// block may even continue across files.
type lexer struct {
	fsys   fs.FS
	toks   []token
	root   string // "/" when fsys is the whole file system, for names shown
	warn   func(Pos, string)
	files  int
	params map[string]bool // $NAME=VALUE definitions seen, by name
}

// source is a file being read: its name in fsys and the name to show.
type source struct {
	name, show string
}

// file reads src, splicing in what it includes. stack holds the files being
// read, outermost first, to find include cycles.
func (l *lexer) file(src source, stack []source, from Pos) error {
	if l.files++; l.files > maxFiles {
		return errorf(from, "more than %d files read (includes nested too deep?)", maxFiles)
	}
	data, err := fs.ReadFile(l.fsys, src.name)
	if err != nil {
		if from.File == "" {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the name is said already
			}
			return fmt.Errorf("%s: %w", src.show, err)
		}
		return errorf(from, "include %s: %v", src.show, unwrapPath(err))
	}
	stack = append(stack, src)
	continued := false // the previous line was a definition ending in '\'
	for i, line := range strings.Split(string(data), "\n") {
		pos := Pos{File: src.show, Line: i + 1}
		line = strings.TrimSuffix(line, "\r")
		if name, ok := definition(line); ok || continued {
			// keepalived.conf(5), "Parameter substitution": $NAME=VALUE,
			// continued on the next line after a '\'. The values are not
			// kept: a use of one in the LVS part is an error (see
			// substitutes), elsewhere it does not matter.
			if ok {
				l.params[name] = true
				l.warn(pos, fmt.Sprintf("$%s: parameter definition not handled, skipped", name))
			}
			continued = strings.HasSuffix(line, "\\")
			continue
		}
		// keepalived finds includes in whole lines, before anything else
		// (keepalived.conf(5)), so the name may hold braces.
		if words := strings.Fields(stripComment(line)); len(words) > 0 && isInclude(words[0]) {
			if len(words) == 1 {
				return errorf(pos, "%s: missing file name", words[0])
			}
			if len(words) > 2 {
				l.warn(pos, fmt.Sprintf("%s: extra argument %q ignored", words[0], words[2]))
			}
			if err := l.include(strings.Trim(words[1], `"`), pos, src, stack); err != nil {
				return err
			}
			continue
		}
		toks, err := splitLine(line, pos)
		if err != nil {
			return err
		}
		l.toks = append(l.toks, toks...)
	}
	return nil
}

// definition reports whether line defines a parameter, "$NAME=VALUE"
// with only whitespace before the '$', and returns the name.
func definition(line string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimLeft(line, " \t"), "$")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, "=")
	return name, ok && paramName(name) == len(name) && name != ""
}

// paramName is the length of the parameter name s starts with: letters,
// digits and '_', not starting with a digit.
func paramName(s string) int {
	n := 0
	for n < len(s) && (s[n] == '_' || s[n] >= 'a' && s[n] <= 'z' || s[n] >= 'A' && s[n] <= 'Z' || n > 0 && s[n] >= '0' && s[n] <= '9') {
		n++
	}
	return n
}

// stripComment drops a comment from a line: from the first '#' or '!'
// outside double quotes.
func stripComment(line string) string {
	in := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '"':
			in = !in
		case c == '\\' && in:
			i++
		case (c == '#' || c == '!') && !in:
			return line[:i]
		}
	}
	return line
}

// isInclude reports whether w is include or one of its variants. The
// variants only change which missing files keepalived reports; we report
// the same for all (see include).
func isInclude(w string) bool {
	switch w {
	case "include", "includer", "includem", "includew", "includeb", "includea":
		return true
	}
	return false
}

// include reads the files pattern names. keepalived.conf(5): a relative
// name is relative to the directory of the including file; names may hold
// glob wildcards and csh-style braces.
func (l *lexer) include(pattern string, at Pos, src source, stack []source) error {
	abs := strings.HasPrefix(pattern, "/")
	var name string
	if abs {
		// An fs.FS has no absolute names: "/" is its root (Parse reads
		// through os.DirFS("/"), so there it is the real root).
		name = path.Clean(strings.TrimLeft(pattern, "/"))
	} else {
		name = path.Join(path.Dir(src.name), pattern)
	}
	if name == ".." || strings.HasPrefix(name, "../") {
		return errorf(at, "include %s: outside the file system given", pattern)
	}
	var matches []string
	wild := false
	alts := expandBraces(name)
	if alts == nil {
		return errorf(at, "include %s: more than %d names in its braces", pattern, maxAlternatives)
	}
	for _, p := range alts {
		if strings.ContainsAny(p, "*?[") {
			wild = true
			m, err := fs.Glob(l.fsys, p)
			if err != nil {
				return errorf(at, "include %s: %v", pattern, err)
			}
			slices.Sort(m) // glob(3) sorts its matches
			matches = append(matches, m...)
			continue
		}
		if _, err := fs.Stat(l.fsys, p); err != nil {
			if errors.Is(err, fs.ErrNotExist) && len(alts) > 1 {
				continue // a brace alternative that names no file, as in glob(3)
			}
			return errorf(at, "include %s: %v", pattern, unwrapPath(err))
		}
		matches = append(matches, p)
	}
	if len(matches) == 0 {
		if wild || len(alts) > 1 {
			// keepalived.conf(5): a wildcard that matches nothing is not
			// an error (an empty conf.d); say so, it may be a typo.
			l.warn(at, fmt.Sprintf("include %s: no file matches", pattern))
			return nil
		}
		return errorf(at, "include %s: no such file", pattern)
	}
	for _, m := range matches {
		info, err := fs.Stat(l.fsys, m)
		if err != nil {
			return errorf(at, "include %s: %v", pattern, unwrapPath(err))
		}
		if info.IsDir() {
			l.warn(at, fmt.Sprintf("include %s: %s is a directory, skipped", pattern, l.show(m, src, abs)))
			continue
		}
		inc := source{name: m, show: l.show(m, src, abs)}
		for i, s := range stack {
			if s.name == m {
				chain := make([]string, 0, len(stack)-i+1)
				for _, s := range stack[i:] {
					chain = append(chain, s.show)
				}
				chain = append(chain, inc.show)
				return errorf(at, "include %s: include cycle %s", pattern, strings.Join(chain, " -> "))
			}
		}
		if err := l.file(inc, stack, at); err != nil {
			return err
		}
	}
	return nil
}

// show is how messages name the included file m: beside the including
// file as the configuration names that one, so that a relative top file
// gives relative names.
func (l *lexer) show(m string, src source, abs bool) string {
	if abs {
		return "/" + m
	}
	if dir := path.Dir(src.name); dir == "." {
		return path.Join(path.Dir(src.show), m)
	} else if rest, ok := strings.CutPrefix(m, dir+"/"); ok {
		return path.Join(path.Dir(src.show), rest)
	}
	return l.root + m // a name with "..": the full one is clearest
}

// unwrapPath drops the path an fs error repeats: messages name the file
// the way the configuration does already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, fs.ErrNotExist) {
			return errors.New("no such file")
		}
		return pe.Err
	}
	return err
}

// maxAlternatives bounds a brace expansion ("{a,b}{c,d}..." doubles with
// each pair of braces).
const maxAlternatives = 1000

// expandBraces expands csh-style braces, "a{b,c{d,e}}f" into abf, acdf,
// acef, as glob(3) with GLOB_BRACE does. An unmatched brace is literal.
// It returns nil if there would be more than maxAlternatives names.
func expandBraces(p string) []string {
	open := strings.IndexByte(p, '{')
	if open < 0 {
		return []string{p}
	}
	depth, alts, from := 0, []string(nil), open+1
	for i := open; i < len(p); i++ {
		switch p[i] {
		case '{':
			depth++
		case ',':
			if depth == 1 {
				alts = append(alts, p[from:i])
				from = i + 1
			}
		case '}':
			if depth--; depth > 0 {
				continue
			}
			alts = append(alts, p[from:i])
			rests := expandBraces(p[i+1:])
			if rests == nil {
				return nil
			}
			var out []string
			for _, a := range alts {
				as := expandBraces(a)
				if as == nil || len(out)+len(as)*len(rests) > maxAlternatives {
					return nil
				}
				for _, e := range as {
					for _, rest := range rests {
						out = append(out, p[:open]+e+rest)
					}
				}
			}
			return out
		}
	}
	return []string{p}
}

// splitLine splits one line into tokens. keepalived.conf(5): '#' and '!'
// start a comment anywhere in a line; quotes are removed and the text
// between them kept whole, with shell-like backslash escapes. The page
// names " and ' as quotes, but keepalived 2.2.7 --config-test keeps single
// quotes (it calls "lvs_sched 'rr'" an invalid scheduler): they only
// group a script's parameters, so they are left in the text for that.
func splitLine(line string, pos Pos) ([]token, error) {
	var toks []token
	var cur strings.Builder
	in, quoted := false, false // inside a token; the token had quotes
	emit := func() {
		if in {
			toks = append(toks, token{text: cur.String(), quoted: quoted, pos: pos, first: len(toks) == 0})
		}
		cur.Reset()
		in, quoted = false, false
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r':
			emit()
		case c == '#' || c == '!':
			emit()
			return toks, nil
		case c == '{' && strings.HasSuffix(cur.String(), "$"):
			// "${NAME}" is a parameter, not a block: keep it in the word
			// so that the parser can refuse it.
			end := strings.IndexByte(line[i:], '}')
			if end < 0 {
				end = len(line) - i - 1
			}
			cur.WriteString(line[i : i+end+1])
			i += end
		case c == '{' || c == '}':
			emit()
			toks = append(toks, token{text: string(c), pos: pos, first: len(toks) == 0})
		case c == '"':
			end := i + 1
			for ; end < len(line) && line[end] != c; end++ {
				if line[end] == '\\' {
					end++
				}
			}
			if end >= len(line) {
				return nil, errorf(pos, "unterminated quote")
			}
			cur.WriteString(unescape(line[i+1 : end]))
			in, quoted = true, true
			i = end
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	emit()
	return toks, nil
}

// unescape applies the escapes keepalived.conf(5) lists for quoted
// strings: \a \b \E \f \n \r \t \v, \nnn (octal, up to 3 digits), \xXX
// (hex), \cC (control-C); \C for any other C is C.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch c := s[i]; c {
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'E':
			b.WriteByte(0x1b)
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v, n := 0, 0
			for ; n < 3 && i+n < len(s) && s[i+n] >= '0' && s[i+n] <= '7'; n++ {
				v = v*8 + int(s[i+n]-'0')
			}
			b.WriteByte(byte(v))
			i += n - 1
		case 'x':
			v, n := 0, 0
			for ; n < 2 && i+1+n < len(s) && isHex(s[i+1+n]); n++ {
				v = v*16 + hexVal(s[i+1+n])
			}
			if n == 0 {
				b.WriteByte('x')
				continue
			}
			b.WriteByte(byte(v))
			i += n
		case 'c':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i] & 0x1f)
			} else {
				b.WriteByte('c')
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) int {
	switch {
	case c >= 'a':
		return int(c-'a') + 10
	case c >= 'A':
		return int(c-'A') + 10
	}
	return int(c - '0')
}
