package manifest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// spdx is the subset of SPDX 2.3 JSON strata writes.
type spdx struct {
	SPDXVersion       string         `json:"spdxVersion"`
	DataLicense       string         `json:"dataLicense"`
	SPDXID            string         `json:"SPDXID"`
	Name              string         `json:"name"`
	DocumentNamespace string         `json:"documentNamespace"`
	CreationInfo      spdxCreation   `json:"creationInfo"`
	Packages          []spdxPackage  `json:"packages"`
	Relationships     []spdxRelation `json:"relationships"`
}

type spdxCreation struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name             string       `json:"name"`
	SPDXID           string       `json:"SPDXID"`
	VersionInfo      string       `json:"versionInfo,omitempty"`
	DownloadLocation string       `json:"downloadLocation"`
	FilesAnalyzed    bool         `json:"filesAnalyzed"`
	Checksums        []spdxSum    `json:"checksums,omitempty"`
	ExternalRefs     []spdxExtRef `json:"externalRefs,omitempty"`
	PrimaryPurpose   string       `json:"primaryPackagePurpose,omitempty"`
}

type spdxSum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type spdxExtRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxRelation struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

func spdxID(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// WriteSPDX writes the image's package list as an SPDX 2.3 JSON document:
// the image is the described package and contains one package per
// installed Debian package (with a Debian purl) plus the strata agent.
func (m *Manifest) WriteSPDX(path, distro string) error {
	img := "SPDXRef-Image-" + spdxID(m.Image)
	doc := spdx{
		SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT",
		Name:              m.Image,
		DocumentNamespace: "urn:strata:image:" + spdxID(m.Image) + ":" + m.Inputs.PhaseKeys["final"],
		CreationInfo: spdxCreation{
			Created:  m.Created.UTC().Format(time.RFC3339),
			Creators: []string{"Tool: strata-" + m.Builder},
		},
	}
	root := spdxPackage{Name: m.Image, SPDXID: img, DownloadLocation: "NOASSERTION", PrimaryPurpose: "OPERATING-SYSTEM"}
	for _, o := range m.Outputs {
		if o.Format != "tar" {
			root.Checksums = append(root.Checksums, spdxSum{Algorithm: "SHA256", Value: o.SHA256})
			break
		}
	}
	doc.Packages = append(doc.Packages, root)
	doc.Relationships = append(doc.Relationships, spdxRelation{"SPDXRef-DOCUMENT", "DESCRIBES", img})
	for _, p := range m.Packages {
		id := "SPDXRef-Package-" + spdxID(p.Name+"-"+p.Version)
		purl := fmt.Sprintf("pkg:deb/%s/%s@%s?arch=%s", distro, url.PathEscape(p.Name), url.PathEscape(p.Version), p.Arch)
		if p.Source != "" && p.Source != p.Name {
			purl += "&upstream=" + url.QueryEscape(p.Source)
		}
		doc.Packages = append(doc.Packages, spdxPackage{
			Name: p.Name, SPDXID: id, VersionInfo: p.Version, DownloadLocation: "NOASSERTION",
			ExternalRefs: []spdxExtRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: purl}},
		})
		doc.Relationships = append(doc.Relationships, spdxRelation{img, "CONTAINS", id})
	}
	if m.Agent != nil {
		id := "SPDXRef-Package-strata-agent"
		doc.Packages = append(doc.Packages, spdxPackage{
			Name: "strata-agent", SPDXID: id, VersionInfo: m.Agent.Version, DownloadLocation: "NOASSERTION",
			Checksums: []spdxSum{{Algorithm: "SHA256", Value: m.Agent.SHA256}}, PrimaryPurpose: "APPLICATION",
		})
		doc.Relationships = append(doc.Relationships, spdxRelation{img, "CONTAINS", id})
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
