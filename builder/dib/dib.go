// Package dib locates an installed diskimage-builder (Debian's
// python3-diskimage-builder) whose element tree and shell library strata
// offers to DIB elements, and holds strata's own implementation of the
// documented parts of that shell library for hosts without one.
//
// strata never copies diskimage-builder's files: when DIB is installed,
// hooks get $_LIB pointing at its lib/ directory and its element tree is
// searched last (as disk-image-create searches it); otherwise $_LIB points
// at the small library written here.
//
// This package only looks at the host's files; it runs nothing.
package dib

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Install is a diskimage-builder installation.
type Install struct {
	// Dir is the diskimage_builder package directory.
	Dir string
	// Elements is its element tree, Lib its shell library.
	Elements, Lib string
	// Version is the installed version ("3.13.0"), "" if unknown.
	Version string
}

// candidates are where distributions install diskimage-builder's Python
// package, most likely first. STRATA_DIB_DIR overrides them all ("" or a
// path that holds no DIB disables the lookup).
func candidates() []string {
	if d, ok := os.LookupEnv("STRATA_DIB_DIR"); ok {
		if d == "" {
			return nil
		}
		return []string{d}
	}
	out := []string{"/usr/lib/python3/dist-packages/diskimage_builder"}
	for _, g := range []string{
		"/usr/local/lib/python3*/dist-packages/diskimage_builder",
		"/usr/lib/python3*/site-packages/diskimage_builder",
		"/usr/local/lib/python3*/site-packages/diskimage_builder",
	} {
		m, _ := filepath.Glob(g)
		sort.Strings(m)
		out = append(out, m...)
	}
	return out
}

// Find returns the host's diskimage-builder, if one is installed.
func Find() (*Install, bool) {
	for _, d := range candidates() {
		if in, ok := at(d); ok {
			return in, true
		}
	}
	return nil, false
}

func at(dir string) (*Install, bool) {
	in := &Install{Dir: dir, Elements: filepath.Join(dir, "elements"), Lib: filepath.Join(dir, "lib")}
	if !IsLib(in.Lib) {
		return nil, false
	}
	if fi, err := os.Stat(in.Elements); err != nil || !fi.IsDir() {
		return nil, false
	}
	in.Version = version(dir)
	return in, true
}

// IsLib reports whether dir is diskimage-builder's shell library.
func IsLib(dir string) bool {
	for _, f := range []string{"die", "img-functions", "common-functions"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// version reads the version pip or Debian recorded beside the package.
func version(dir string) string {
	infos, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), "diskimage_builder-*.*-info"))
	for _, info := range infos {
		for _, f := range []string{"PKG-INFO", "METADATA"} {
			b, err := os.ReadFile(filepath.Join(info, f))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "Version: "); ok {
					return strings.TrimSpace(v)
				}
			}
		}
	}
	return ""
}
