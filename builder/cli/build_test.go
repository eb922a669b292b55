package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"strata/builder/dib"
)

func TestShellSplitReadsMkfsOptionsAsAShellWould(t *testing.T) {
	for in, want := range map[string][]string{
		`-i 4096 -J size=64`:          {"-i", "4096", "-J", "size=64"},
		`-E "lazy_itable_init=0" -m0`: {"-E", "lazy_itable_init=0", "-m0"},
		`-O 'a b' x\ y`:               {"-O", "a b", "x y"},
		`  `:                          nil,
	} {
		got, err := shellSplit(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("shellSplit(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := shellSplit(`-O "open`); err == nil {
		t.Error("an unterminated quote was accepted")
	}
}

// Every option of diskimage-builder 3.13's disk-image-create (its getopt
// line and --help) is a flag of strata build.
func TestEveryDiskImageCreateFlagIsAccepted(t *testing.T) {
	cmd := NewBuildCommand("test")
	// disk-image-create 3.13's getopt line, and the options only its help
	// lists.
	short := "a:ho:t:xucnp:"
	long := "checksum,no-tmpfs,offline,help,version,min-tmpfs:,image-size:,image-cache:,max-online-resize:,mkfs-options:,qemu-img-options:,ramdisk-element:,root-label:,install-type:,docker-target:,logfile:"
	helpOnly := "image-extra-size:,mkfs-journal-size:"
	// The installed diskimage-builder's own script is the checklist when
	// there is one (make test installs it): its getopt line and every
	// option its --help names.
	if in, ok := dib.Find(); ok {
		b, err := os.ReadFile(filepath.Join(in.Lib, "disk-image-create"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`getopt -o (\S+) -l (\S+)`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no getopt line", filepath.Join(in.Lib, "disk-image-create"))
		}
		short, long = string(m[1]), string(m[2])
		var help []string
		for _, h := range regexp.MustCompile(`(?m)^\s*echo "\s+(?:-\w\|)?--([a-z-]+)`).FindAllSubmatch(b, -1) {
			help = append(help, string(h[1]))
		}
		if len(help) < 10 {
			t.Fatalf("read only %d options from disk-image-create's help: %v", len(help), help)
		}
		helpOnly = strings.Join(help, ",")
		t.Logf("checked against diskimage-builder %s: -%s, --%s, --%s", in.Version, short, long, helpOnly)
	}
	for _, c := range strings.ReplaceAll(short, ":", "") {
		if c == 'h' {
			continue // cobra's own help flag
		}
		if cmd.Flags().ShorthandLookup(string(c)) == nil {
			t.Errorf("-%c is not a flag", c)
		}
	}
	for _, l := range strings.Split(long+","+helpOnly, ",") {
		l = strings.TrimSuffix(l, ":")
		if l == "help" {
			continue
		}
		if cmd.Flags().Lookup(l) == nil {
			t.Errorf("--%s is not a flag", l)
		}
	}
}
