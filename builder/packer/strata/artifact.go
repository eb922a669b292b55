package strata

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"strata/builder/build"
)

// Artifact is a finished strata build: the images, each with its .sha256,
// the manifest and the SBOM.
type Artifact struct {
	// Image is the first image written (the recipe's first format), Format
	// its format and Digest its "sha256:<hex>".
	Image, Format, Digest string
	// Checksum is Image's .sha256 file; Manifest and SBOM are beside it.
	Checksum, Manifest, SBOM string
	// Recipe is the recipe the image was built from.
	Recipe string
	files  []string
}

// State keys a strata artifact answers (see State).
const (
	StateImage    = "image"
	StateFormat   = "image_format"
	StateDigest   = "image_digest"
	StateManifest = "manifest"
	StateRecipe   = "recipe"
)

func newArtifact(cfg *build.Config, res *build.Result) (*Artifact, error) {
	if res.Manifest == nil || len(res.Manifest.Outputs) == 0 {
		return nil, errors.New("the build wrote no image")
	}
	o := res.Manifest.Outputs[0]
	a := &Artifact{
		Image: cfg.OutputPath(o.Format), Format: o.Format, Digest: "sha256:" + o.SHA256,
		Checksum: cfg.OutputPath(o.Format) + ".sha256", Manifest: cfg.ManifestPath(), SBOM: cfg.SBOMPath(),
		Recipe: cfg.Recipe, files: res.Files,
	}
	return a, nil
}

// BuilderId is BuilderID.
func (a *Artifact) BuilderId() string { return BuilderID }

// Files are every file the build wrote: images first, then checksums,
// manifest and SBOM.
func (a *Artifact) Files() []string { return append([]string{}, a.files...) }

// Id is the image's digest.
func (a *Artifact) Id() string { return a.Digest }

func (a *Artifact) String() string {
	return fmt.Sprintf("strata image %s (%s; manifest %s; %d files)", a.Image, a.Digest, a.Manifest, len(a.files))
}

// State answers the StateXxx keys, and "generated_data" with the builder's
// generated variables.
func (a *Artifact) State(name string) interface{} {
	switch name {
	case StateImage:
		return a.Image
	case StateFormat:
		return a.Format
	case StateDigest:
		return a.Digest
	case StateManifest:
		return a.Manifest
	case StateRecipe:
		return a.Recipe
	case "generated_data":
		return map[string]interface{}{
			"ImagePath": a.Image, "ImageDigest": a.Digest, "ManifestPath": a.Manifest, "Recipe": a.Recipe,
		}
	}
	return nil
}

// Destroy removes every file of the artifact.
func (a *Artifact) Destroy() error {
	var errs []string
	for _, f := range a.files {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}
