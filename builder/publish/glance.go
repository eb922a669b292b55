package publish

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
)

// Image tags and properties strata sets; TagStrata and PropertySHA256
// together find an image by content.
const (
	TagStrata      = "strata"
	PropertySHA256 = "strata_sha256"
)

// glance is the image service, through gophercloud.
type glance struct {
	client *gophercloud.ServiceClient
	out    io.Writer
	// poll is the interval between status checks (1 s).
	poll time.Duration
}

func (g *glance) fail(action string, err error) error {
	return serviceError("glance", g.client.Endpoint, action, err)
}

// bySHA256 is a list query for strata's images of one content.
type bySHA256 string

func (q bySHA256) ToImageListQuery() (string, error) {
	v := url.Values{"tag": {TagStrata}, PropertySHA256: {string(q)}}
	return "?" + v.Encode(), nil
}

// find lists the images strata uploaded with this SHA-256.
func (g *glance) find(ctx context.Context, sha256 string) ([]images.Image, error) {
	pages, err := images.List(g.client, bySHA256(sha256)).AllPages(ctx)
	if err != nil {
		return nil, g.fail("listing images", err)
	}
	all, err := images.ExtractImages(pages)
	if err != nil {
		return nil, g.fail("listing images", err)
	}
	var out []images.Image
	for _, img := range all {
		// A Glance that ignores the property filter must not make us
		// reuse another image.
		if prop(img, PropertySHA256) == sha256 {
			out = append(out, img)
		}
	}
	return out, nil
}

// imageSpec is what a new image is created with.
type imageSpec struct {
	Name       string
	DiskFormat string
	Tags       []string
	Properties map[string]string
	MinDiskGB  int
}

// create makes the image record (status queued).
func (g *glance) create(ctx context.Context, spec imageSpec) (images.Image, error) {
	img, err := images.Create(ctx, g.client, images.CreateOpts{
		Name: spec.Name, DiskFormat: spec.DiskFormat, ContainerFormat: "bare",
		Tags: spec.Tags, Properties: spec.Properties, MinDisk: spec.MinDiskGB,
	}).Extract()
	if err != nil {
		return images.Image{}, g.fail("creating image "+spec.Name, err)
	}
	return *img, nil
}

// upload sends the file's bytes.
func (g *glance) upload(ctx context.Context, id, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := imagedata.Upload(ctx, g.client, id, ctxReader{ctx, f}).ExtractErr(); err != nil {
		return g.fail("uploading the data of image "+id, err)
	}
	return nil
}

// waitActive polls the image until Glance has stored and hashed it.
func (g *glance) waitActive(ctx context.Context, id string, timeout time.Duration) (images.Image, error) {
	deadline := time.Now().Add(timeout)
	poll := g.poll
	if poll == 0 {
		poll = time.Second
	}
	for {
		img, err := images.Get(ctx, g.client, id).Extract()
		if err != nil {
			return images.Image{}, g.fail("reading image "+id, err)
		}
		switch img.Status {
		case images.ImageStatusActive:
			return *img, nil
		case images.ImageStatusQueued, images.ImageStatusSaving, images.ImageStatusImporting:
		default:
			return *img, &ServiceError{Service: "glance", URL: g.client.Endpoint, Action: "storing image " + id,
				Message: fmt.Sprintf("the image went to status %q instead of active", img.Status)}
		}
		if time.Now().After(deadline) {
			return *img, &ServiceError{Service: "glance", URL: g.client.Endpoint, Action: "storing image " + id,
				Message: fmt.Sprintf("still %q after %s", img.Status, timeout)}
		}
		select {
		case <-ctx.Done():
			return *img, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// delete removes an image; a missing one is fine.
func (g *glance) delete(ctx context.Context, id string) error {
	err := images.Delete(ctx, g.client, id).ExtractErr()
	if err != nil && !gophercloud.ResponseCodeIs(err, 404) {
		return g.fail("deleting image "+id, err)
	}
	return nil
}

// verify compares what Glance computed with our own digests.
func verify(img images.Image, d digests) error {
	var problems []string
	if img.Checksum != d.MD5 {
		problems = append(problems, fmt.Sprintf("checksum (MD5) %q, ours %s", img.Checksum, d.MD5))
	}
	switch algo := prop(img, "os_hash_algo"); algo {
	case "sha512":
		if v := prop(img, "os_hash_value"); v != d.SHA512 {
			problems = append(problems, fmt.Sprintf("os_hash_value (SHA-512) %q, ours %s", v, d.SHA512))
		}
	case "":
		problems = append(problems, "no os_hash_value (a Glance older than Rocky?)")
	default:
		problems = append(problems, fmt.Sprintf("os_hash_algo is %q; strata checks sha512 (Glance's default)", algo))
	}
	if img.SizeBytes != d.Size {
		problems = append(problems, fmt.Sprintf("size %d bytes, ours %d", img.SizeBytes, d.Size))
	}
	if len(problems) > 0 {
		return fmt.Errorf("image %s does not match the file: %v", img.ID, problems)
	}
	return nil
}

func prop(img images.Image, key string) string {
	if v, ok := img.Properties[key].(string); ok {
		return v
	}
	return ""
}
