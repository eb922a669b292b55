package ci

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// qemu-img creates and truncates the external data file it is told to use,
// and follows backing files and extents: a test that names a host file
// there (data_file=/etc/passwd) zeroes that file on the machine running the
// tests. Such tests name files under t.TempDir(); this keeps every test
// file of the repository that way.
var hostFileInImageOption = regexp.MustCompile(`data_file=/|"-b",\s*"/|FLAT \\"/`)

func TestNoTestPointsQemuImgAtAHostFile(t *testing.T) {
	var bad []string
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if c := strings.TrimSpace(line); strings.HasPrefix(c, "//") || strings.HasPrefix(c, "var hostFileInImageOption") {
				continue
			}
			if hostFileInImageOption.MatchString(line) {
				bad = append(bad, p+":"+strconv.Itoa(i+1)+": "+strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("tests that point qemu-img at a host file (use a file under t.TempDir()):\n%s", strings.Join(bad, "\n"))
	}
}
