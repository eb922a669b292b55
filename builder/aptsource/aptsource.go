// Package aptsource finds the Debian mirror the build host itself uses, by
// reading its apt sources in both formats (one-line sources.list entries and
// deb822 .sources files), so that images are built from the same mirror as
// the host by default and no mirror host name is ever written into strata.
//
// It only reads files; it never contacts a mirror.
package aptsource

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Source is one repository entry: a URI with its suites and components.
type Source struct {
	Types      []string // deb, deb-src
	URI        string
	Suites     []string
	Components []string
	File       string // where it was read from, for messages
}

// Mirrors is what the host's sources say about Debian.
type Mirrors struct {
	// Debian is the mirror serving the release suites (bookworm,
	// bookworm-updates...), "" if the host names none.
	Debian string
	// Security serves the <release>-security suites, "" if none.
	Security string
}

// debianCodenames lists Debian release names (and aliases) a host's suites
// can carry; anything else (an Ubuntu codename, a vendor's suite) is not a
// Debian mirror.
var debianCodenames = map[string]bool{
	"buster": true, "bullseye": true, "bookworm": true, "trixie": true, "forky": true,
	"duke": true, "sid": true, "stable": true, "testing": true, "unstable": true,
	"oldstable": true, "oldoldstable": true,
}

func suiteBase(s string) (base, pocket string) {
	s = strings.TrimSuffix(s, "/")
	if i := strings.IndexAny(s, "-/"); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// Find reads the host's apt configuration under root ("/" normally) and
// returns its Debian mirrors.
func Find(root string) (Mirrors, error) {
	srcs, err := Read(root)
	if err != nil {
		return Mirrors{}, err
	}
	return Pick(srcs), nil
}

// Pick chooses the Debian and security mirrors from sources: the first deb
// entry carrying a plain or -updates Debian suite, and the first carrying a
// -security (or legacy /updates) suite.
func Pick(srcs []Source) Mirrors {
	var m Mirrors
	for _, s := range srcs {
		if !contains(s.Types, "deb") {
			continue
		}
		for _, suite := range s.Suites {
			base, pocket := suiteBase(suite)
			if !debianCodenames[base] {
				continue
			}
			switch pocket {
			case "", "updates", "backports", "proposed-updates":
				if pocket == "updates" && strings.Contains(suite, "/") {
					// bullseye/updates and older: the security archive.
					if m.Security == "" {
						m.Security = s.URI
					}
				} else if m.Debian == "" {
					m.Debian = s.URI
				}
			case "security":
				if m.Security == "" {
					m.Security = s.URI
				}
			}
		}
	}
	return m
}

// Read parses sources.list, sources.list.d/*.list and sources.list.d/*.sources.
func Read(root string) ([]Source, error) {
	etc := filepath.Join(root, "etc/apt")
	var out []Source
	files := []string{filepath.Join(etc, "sources.list")}
	more, _ := filepath.Glob(filepath.Join(etc, "sources.list.d", "*"))
	sort.Strings(more)
	files = append(files, more...)
	for _, f := range files {
		var srcs []Source
		var err error
		switch {
		case strings.HasSuffix(f, ".list"):
			srcs, err = readOneLine(f)
		case strings.HasSuffix(f, ".sources"):
			srcs, err = readDeb822(f)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, srcs...)
	}
	return out, nil
}

func readOneLine(path string) ([]Source, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Source
	for n, line := range strings.Split(string(b), "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		typ := f[0]
		if typ != "deb" && typ != "deb-src" {
			return nil, fmt.Errorf("%s:%d: expected deb or deb-src, found %q", path, n+1, typ)
		}
		f = f[1:]
		if len(f) > 0 && strings.HasPrefix(f[0], "[") {
			// Options like [arch=amd64 signed-by=...] run to the closing ].
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("%s:%d: expected URI and suite", path, n+1)
		}
		out = append(out, Source{Types: []string{typ}, URI: f[0], Suites: []string{f[1]}, Components: f[2:], File: path})
	}
	return out, nil
}

func readDeb822(path string) ([]Source, error) {
	fh, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []Source
	stanza := map[string]string{}
	var last string
	flush := func() {
		if len(stanza) == 0 {
			return
		}
		if strings.EqualFold(strings.TrimSpace(stanza["enabled"]), "no") {
			stanza = map[string]string{}
			return
		}
		for _, uri := range strings.Fields(stanza["uris"]) {
			out = append(out, Source{
				Types:      strings.Fields(stanza["types"]),
				URI:        uri,
				Suites:     strings.Fields(stanza["suites"]),
				Components: strings.Fields(stanza["components"]),
				File:       path,
			})
		}
		stanza = map[string]string{}
	}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				stanza[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			stanza[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out, sc.Err()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
