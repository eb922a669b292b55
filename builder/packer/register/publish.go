package register

import (
	"context"
	"io"
)

// Options, Result and PublishFunc are builder/publish's API (issue 6),
// which registers an image with Glance and as a datastore version for
// `strata image publish`. That package is written in another branch; until
// it is merged the post-processor is written against this mirror of its
// API, and the plugin's main wires publish.Publish (with these two types
// becoming aliases of publish.Options and publish.Result).
type Options struct {
	Recipe        string // images/<x>.yaml (datastore section)
	Image         string // the built qcow2; NAME.qcow2.sha256 and NAME.manifest.json beside it
	Cloud         string // clouds.yaml cloud name; "" = OS_* environment
	ControllerURL string // strata controller API; "" = from the service catalog
	TroveURL      string // also register in a real Trove; "" = none
	Out           io.Writer
}

// Result is what a publish did.
type Result struct {
	ImageID        string
	Uploaded       bool
	VersionID      string
	VersionCreated bool
	TroveVersionID string
	Seconds        float64
}

// PublishFunc is builder/publish.Publish.
type PublishFunc func(ctx context.Context, o Options) (*Result, error)
