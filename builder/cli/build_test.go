package cli

import (
	"reflect"
	"strings"
	"testing"
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
	short := "a:ho:t:xucnp:"
	long := "checksum,no-tmpfs,offline,help,version,min-tmpfs:,image-size:,image-cache:,max-online-resize:,mkfs-options:,qemu-img-options:,ramdisk-element:,root-label:,install-type:,docker-target:,logfile:"
	helpOnly := "image-extra-size:,mkfs-journal-size:"
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
