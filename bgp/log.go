package bgp

import (
	"context"
	"log/slog"
	"slices"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger hands gobgp's log lines to slog. gobgp's Info lines (a peer
// added, a state change) go to Debug: the speaker logs what matters to
// an operator itself, in the director's words.
type gobgpLogger struct{ l *slog.Logger }

func (g gobgpLogger) log(lv slog.Level, msg string, f gobgplog.Fields) {
	ctx := context.Background()
	if !g.l.Enabled(ctx, lv) {
		return
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	attrs := make([]slog.Attr, 0, len(keys)+1)
	attrs = append(attrs, slog.String("component", "gobgp"))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, f[k]))
	}
	g.l.LogAttrs(ctx, lv, msg, attrs...)
}

// Panic logs and panics, as gobgp expects of it.
func (g gobgpLogger) Panic(msg string, f gobgplog.Fields) {
	g.log(slog.LevelError, msg, f)
	panic("gobgp: " + msg)
}

// Fatal logs at ERROR and returns: gobgp calls it only where the director
// does not go (its gRPC API, which is not started).
func (g gobgpLogger) Fatal(msg string, f gobgplog.Fields) { g.log(slog.LevelError, msg, f) }
func (g gobgpLogger) Error(msg string, f gobgplog.Fields) { g.log(slog.LevelError, msg, f) }
func (g gobgpLogger) Warn(msg string, f gobgplog.Fields)  { g.log(slog.LevelWarn, msg, f) }
func (g gobgpLogger) Info(msg string, f gobgplog.Fields)  { g.log(slog.LevelDebug, msg, f) }
func (g gobgpLogger) Debug(msg string, f gobgplog.Fields) { g.log(slog.LevelDebug, msg, f) }

// SetLevel does nothing: the director's logger decides.
func (g gobgpLogger) SetLevel(gobgplog.LogLevel) {}

// GetLevel tells gobgp whether to bother building debug lines.
func (g gobgpLogger) GetLevel() gobgplog.LogLevel {
	if g.l.Enabled(context.Background(), slog.LevelDebug) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
