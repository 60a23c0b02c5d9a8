package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildDirector builds the director command from pkg (a path such as
// "../cmd/director", relative to the caller's directory) into a new
// temporary directory that any user may read, for tests and tools that
// run it in namespaces. remove deletes the directory.
func BuildDirector(pkg string) (path string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "uvs-director-bin-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { os.RemoveAll(dir) }
	os.Chmod(dir, 0o755) // tests also run it as nobody
	path = filepath.Join(dir, "director")
	if out, err := exec.Command("go", "build", "-o", path, pkg).CombinedOutput(); err != nil {
		remove()
		return "", nil, fmt.Errorf("build director: %v\n%s", err, out)
	}
	return path, remove, nil
}
