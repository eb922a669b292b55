// Package manifest describes a finished image: what went in (elements, their
// digests, build inputs, the agent), what ran (every hook with its seconds
// and exit status), what came out (packages with versions, output files and
// their digests), and the same package list as an SPDX SBOM.
//
// It defines the file formats and reads the package database of an image
// tree; it never runs a build.
package manifest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Version of the manifest format.
const Version = 1

// Manifest is written beside every image as NAME.manifest.json.
type Manifest struct {
	FormatVersion int       `json:"format_version"`
	Image         string    `json:"image"`
	Builder       string    `json:"builder"`
	Created       time.Time `json:"created"`
	// SourceDateEpoch is the timestamp file times in the image are clamped to.
	SourceDateEpoch int64     `json:"source_date_epoch"`
	Arch            string    `json:"arch"`
	Elements        []Element `json:"elements"`
	Hooks           []Hook    `json:"hooks"`
	Packages        []Package `json:"packages"`
	Inputs          Inputs    `json:"inputs"`
	Agent           *Agent    `json:"agent,omitempty"`
	// Datastore is the datastore version the image provides, from its
	// recipe; registering the image uses it.
	Datastore *Datastore `json:"datastore,omitempty"`
	Outputs   []Output   `json:"outputs"`
	// Seconds is the wall time of the whole build.
	Seconds float64 `json:"seconds"`
	// CachedFrom names the phase whose cached tree the build started from,
	// "" for a build from scratch; Reused is set when the finished outputs
	// themselves came from the cache (nothing changed).
	CachedFrom string `json:"cached_from,omitempty"`
	Reused     bool   `json:"reused,omitempty"`
}

// Element is one element of the build.
type Element struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Digest string `json:"digest"`
	// FirstPhase is the earliest phase the element takes part in; changing
	// the element re-runs the build from there.
	FirstPhase string   `json:"first_phase"`
	Provides   []string `json:"provides,omitempty"`
}

// Hook is one hook's run.
type Hook struct {
	Phase   string  `json:"phase"`
	Name    string  `json:"name"`
	Element string  `json:"element"`
	Where   string  `json:"where"` // host or chroot
	Seconds float64 `json:"seconds"`
	// Status is ok, failed, or cached (its effect came from a cached tree).
	Status   string `json:"status"`
	ExitCode int    `json:"exit_code"`
}

// Package is an installed Debian package.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	Source  string `json:"source,omitempty"`
}

// Inputs are the things that made the image, with digests.
type Inputs struct {
	Recipe       string            `json:"recipe,omitempty"`
	RecipeDigest string            `json:"recipe_digest,omitempty"`
	Requested    []string          `json:"requested_elements"`
	Env          map[string]string `json:"env"`
	// Files are host files elements consumed (element-inputs), by variable.
	Files  map[string]File `json:"files,omitempty"`
	Mirror string          `json:"mirror,omitempty"`
	// PhaseKeys are the cache keys of each phase, which hash all of the above.
	PhaseKeys map[string]string `json:"phase_keys"`
}

// File is a host file consumed by the build.
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Agent is the strata agent baked into the image.
type Agent struct {
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
	Path    string `json:"path"`
}

// Datastore names what the image runs.
type Datastore struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Manager string `json:"manager"`
	Port    int    `json:"port,omitempty"`
}

// Output is one file the build wrote.
type Output struct {
	File   string `json:"file"`
	Format string `json:"format"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// VirtualSize is the disk size a VM sees, for disk formats.
	VirtualSize int64 `json:"virtual_size,omitempty"`
}

// Write stores the manifest as indented JSON.
func (m *Manifest) Write(path string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Read loads a manifest.
func Read(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: malformed manifest: %w", path, err)
	}
	if m.FormatVersion != Version {
		return nil, fmt.Errorf("%s: manifest format %d, this strata reads %d", path, m.FormatVersion, Version)
	}
	return &m, nil
}

// DpkgPackages reads the installed packages from an image tree's dpkg status
// database (no dpkg needed on the host).
func DpkgPackages(root string) ([]Package, error) {
	f, err := os.Open(filepath.Join(root, "var/lib/dpkg/status"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Package
	cur := map[string]string{}
	flush := func() {
		if strings.HasPrefix(cur["Status"], "install ok installed") && cur["Package"] != "" {
			src := cur["Source"]
			if i := strings.Index(src, " "); i >= 0 {
				src = src[:i]
			}
			out = append(out, Package{Name: cur["Package"], Version: cur["Version"], Arch: cur["Architecture"], Source: src})
		}
		cur = map[string]string{}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			cur[k] = strings.TrimSpace(v)
		}
	}
	flush()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, sc.Err()
}
