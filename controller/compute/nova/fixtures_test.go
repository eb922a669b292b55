package nova

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestFixturesAreAccountedFor keeps testdata/ honest: every fixture has a
// row in testdata/README.md, recorded (the request and situation that
// produced it), derived (from which recorded answer, and why the state
// itself cannot be caught) or hand-written (why it cannot be recorded);
// every recorded or derived one is written by TestRecordFixtures
// (record_test.go) and no hand-written one is, and every row names a file
// that exists.
func TestFixturesAreAccountedFor(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("testdata", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	recorder, err := os.ReadFile("record_test.go")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| ([a-z-]+) \\| (.*) \\|$")
	rows := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		file, how, why := m[1], m[2], strings.TrimSpace(m[3])
		if _, dup := rows[file]; dup {
			t.Errorf("README: %s has two rows", file)
		}
		rows[file] = how
		if len(why) < 20 {
			t.Errorf("README: %s: %q does not say what produced it or why it is hand-written", file, why)
		}
		if _, err := os.Stat(filepath.Join("testdata", file)); err != nil {
			t.Errorf("README: %s: %v", file, err)
		}
		written := strings.Contains(string(recorder), `{"`+file+`", `)
		switch how {
		case "recorded", "derived":
			if !written {
				t.Errorf("%s is listed as %s, but TestRecordFixtures does not write it", file, how)
			}
		case "hand-written":
			if written {
				t.Errorf("%s is listed as hand-written, but TestRecordFixtures writes it", file)
			}
		default:
			t.Errorf("README: %s is %q: recorded, derived or hand-written", file, how)
		}
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no fixtures in testdata/")
	}
	for _, f := range files {
		if _, ok := rows[filepath.Base(f)]; !ok {
			t.Errorf("%s has no row in testdata/README.md (recorded: the request and situation; hand-written: why)", f)
		}
	}
}
