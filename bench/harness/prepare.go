package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"uvs/testbed"
)

// Prepare is what every benchmark command does before it builds a
// topology: install the missing peers (unless noInstall: then it fails)
// and find the repository's root, where the director is built from and
// results are written.
func Prepare(ctx context.Context, noInstall bool, log *slog.Logger) (root string, err error) {
	if missing := MissingPeers(); len(missing) > 0 {
		if noInstall {
			return "", fmt.Errorf("missing peers: %v", missing)
		}
		if err := InstallPeers(ctx, missing, log); err != nil {
			return "", fmt.Errorf("install peers: %w", err)
		}
	}
	return RepoRoot()
}

// RepoRoot finds the uvs module's root above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 64 {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module uvs\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("not inside the uvs module (no go.mod saying \"module uvs\" above the working directory)")
}

// BuildDirector builds ./cmd/director of the source tree src into
// dir/director and returns its path.
func BuildDirector(ctx context.Context, src, dir string) (string, error) {
	bin := filepath.Join(dir, "director")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/director")
	build.Dir = src
	if b, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build director: %w\n%s", err, b)
	}
	return bin, nil
}

// Begin is every bench command's first step: it needs root (namespaces),
// and with -cleanup it only removes the namespaces a killed run named
// prefix-* left. done says the command is over, with exit code code.
func Begin(name, prefix string, cleanup bool, log *slog.Logger) (code int, done bool) {
	if err := testbed.Available(); err != nil {
		log.Error(name+" needs root", "err", err)
		return 1, true
	}
	if !cleanup {
		return 0, false
	}
	if err := testbed.Cleanup(prefix); err != nil {
		log.Error("cleanup", "err", err)
		return 1, true
	}
	return 0, true
}
