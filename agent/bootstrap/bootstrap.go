// Package bootstrap finds and reads the agent's per-instance bootstrap
// document: a file named on the command line, or the instance's config
// drive (label config-2 or cidata), whose file tree the image's
// strata-config-drive.service copies to /run/strata/config-drive at boot.
//
// On a config drive the document is strata/bootstrap.json, or (Nova
// config-2 drives) the OpenStack personality file whose path is
// /etc/strata/bootstrap.json. Finding none, finding two that disagree, or
// any problem in the document is an error that says exactly what is wrong:
// the agent then refuses to start. This package reads only; it never
// writes to the drive and never guesses.
package bootstrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"strata/agent/wire"
)

// DefaultConfigDrive is where strata-config-drive.service puts the drive's
// files.
const DefaultConfigDrive = "/run/strata/config-drive"

// Paths inside a config drive.
const (
	DrivePath       = "strata/bootstrap.json"
	PersonalityPath = "/etc/strata/bootstrap.json"
	metaDataPath    = "openstack/latest/meta_data.json"
)

// Source says where to look.
type Source struct {
	// File, if set, is the only place looked at.
	File string
	// ConfigDrive is the config drive's file tree (default
	// DefaultConfigDrive).
	ConfigDrive string
}

// Load finds, reads and validates the bootstrap. It returns where it was
// found.
func Load(src Source) (wire.Bootstrap, string, error) {
	if src.File != "" {
		data, err := readCapped(src.File)
		if err != nil {
			return wire.Bootstrap{}, "", fmt.Errorf("bootstrap file: %w", err)
		}
		b, err := wire.ParseBootstrap(data, src.File)
		return b, src.File, err
	}
	dir := src.ConfigDrive
	if dir == "" {
		dir = DefaultConfigDrive
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return wire.Bootstrap{}, "", fmt.Errorf("no bootstrap: --bootstrap was not given and the config drive directory %s does not exist "+
			"(is a config drive labelled config-2 or cidata attached, and has strata-config-drive.service run?)", dir)
	}

	type found struct {
		where string
		data  []byte
	}
	var docs []found
	plain := filepath.Join(dir, DrivePath)
	if data, err := readCapped(plain); err == nil {
		docs = append(docs, found{plain, data})
	} else if !errors.Is(err, os.ErrNotExist) {
		return wire.Bootstrap{}, "", fmt.Errorf("bootstrap %s: %w", plain, err)
	}
	where, data, err := personalityFile(dir)
	if err != nil {
		return wire.Bootstrap{}, "", err
	}
	if where != "" {
		docs = append(docs, found{where, data})
	}
	switch len(docs) {
	case 0:
		return wire.Bootstrap{}, "", fmt.Errorf("no bootstrap on the config drive %s: neither %s nor an OpenStack personality file for %s",
			dir, DrivePath, PersonalityPath)
	case 2:
		a, errA := wire.ParseBootstrap(docs[0].data, docs[0].where)
		b, errB := wire.ParseBootstrap(docs[1].data, docs[1].where)
		if errA != nil {
			return wire.Bootstrap{}, "", errA
		}
		if errB != nil {
			return wire.Bootstrap{}, "", errB
		}
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if !bytes.Equal(ja, jb) {
			return wire.Bootstrap{}, "", fmt.Errorf("inconsistent bootstrap: %s and %s on the same config drive differ", docs[0].where, docs[1].where)
		}
		return a, docs[0].where, nil
	}
	b, err := wire.ParseBootstrap(docs[0].data, docs[0].where)
	return b, docs[0].where, err
}

var contentPathPattern = regexp.MustCompile(`^/content/[0-9A-Za-z]{1,16}$`)

// personalityFile finds /etc/strata/bootstrap.json among the "files" of a
// Nova config drive's meta_data.json and reads its content file.
func personalityFile(dir string) (string, []byte, error) {
	mdPath := filepath.Join(dir, metaDataPath)
	md, err := readCapped(mdPath)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("config drive %s: %w", mdPath, err)
	}
	var meta struct {
		Files []struct {
			Path        string `json:"path"`
			ContentPath string `json:"content_path"`
		} `json:"files"`
	}
	if err := json.Unmarshal(md, &meta); err != nil {
		return "", nil, fmt.Errorf("config drive %s is not valid JSON: %v", mdPath, err)
	}
	var match []string
	for _, f := range meta.Files {
		if f.Path == PersonalityPath {
			match = append(match, f.ContentPath)
		}
	}
	switch {
	case len(match) == 0:
		return "", nil, nil
	case len(match) > 1:
		return "", nil, fmt.Errorf("config drive %s lists %s %d times", mdPath, PersonalityPath, len(match))
	case !contentPathPattern.MatchString(match[0]):
		return "", nil, fmt.Errorf("config drive %s: content_path %q for %s is not of the form /content/NNNN", mdPath, match[0], PersonalityPath)
	}
	p := filepath.Join(dir, "openstack", match[0])
	data, err := readCapped(p)
	if err != nil {
		return "", nil, fmt.Errorf("config drive: %s names %s for %s, which cannot be read: %w", mdPath, p, PersonalityPath, err)
	}
	return p + " (" + PersonalityPath + ")", data, nil
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, wire.MaxBootstrapSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > wire.MaxBootstrapSize && filepath.Base(path) != filepath.Base(metaDataPath) {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, wire.MaxBootstrapSize)
	}
	return data, nil
}
