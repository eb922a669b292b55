// Package glance is the OpenStack image store: images live in Glance and
// are reached through gophercloud with the controller's service
// credentials. A compute driver (Nova) boots Image.Location, the Glance
// image id.
//
// Register streams the bytes to Glance while computing SHA-256 (kept as
// the strata_sha256 property), MD5 and SHA-512, then checks them against
// Glance's checksum and os_hash_value; a mismatch or a failed upload
// deletes the new image; a header that is not a standalone image of the
// declared format (builder/imagecheck) is refused before anything is
// sent. Verify, which runs before every boot, does not download an image:
// it checks that Glance still offers it (status active) with the
// checksums recorded at registration, and reads its first 64 KiB to check
// the header again (anyone who can upload to Glance could have put it
// there).
//
// Like every image store it keeps bytes and checksums only.
package glance

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"strata/builder/imagecheck"
	"strata/controller/imagestore"
)

// PropertySHA256 holds an image's SHA-256 (as builder/publish sets it).
const PropertySHA256 = "strata_sha256"

// Store keeps images in Glance.
type Store struct {
	// Client is an image v2 service client (openstack.NewImageV2).
	Client *gophercloud.ServiceClient
	// ActiveTimeout bounds the wait for an upload to become active (30 min).
	ActiveTimeout time.Duration
	// Poll is the status polling interval (1 s).
	Poll time.Duration
}

var _ imagestore.Store = (*Store)(nil)

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func (s *Store) fail(action string, err error) error {
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) {
		return fmt.Errorf("glance at %s: %s: HTTP %d: %s", s.Client.Endpoint, action, code.Actual, trunc(string(code.Body)))
	}
	return fmt.Errorf("glance at %s: %s: %w", s.Client.Endpoint, action, err)
}

// Register uploads src as a new image.
func (s *Store) Register(ctx context.Context, src io.Reader, opts imagestore.RegisterOptions) (imagestore.Image, error) {
	if opts.DiskFormat != "qcow2" && opts.DiskFormat != "raw" {
		return imagestore.Image{}, fmt.Errorf("%w: disk format %q: want qcow2 or raw", imagestore.ErrInvalid, opts.DiskFormat)
	}
	// Nothing goes to Glance before the header passed.
	src, err := imagecheck.Stream(src, opts.DiskFormat)
	if errors.Is(err, imagecheck.ErrRefused) {
		return imagestore.Image{}, fmt.Errorf("%w: %w", imagestore.ErrInvalid, err)
	} else if err != nil {
		return imagestore.Image{}, fmt.Errorf("reading the image: %w", err)
	}
	props := map[string]string{}
	for k, v := range opts.Properties {
		props[k] = v
	}
	if opts.SHA256 != "" {
		props[PropertySHA256] = opts.SHA256
	}
	created, err := images.Create(ctx, s.Client, images.CreateOpts{ID: opts.ID, Name: opts.Name, DiskFormat: opts.DiskFormat,
		ContainerFormat: "bare", Properties: props}).Extract()
	if err != nil {
		return imagestore.Image{}, s.fail("creating image "+opts.Name, err)
	}
	img, err := s.fill(ctx, created.ID, src, opts.SHA256)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := images.Delete(cctx, s.Client, created.ID).ExtractErr(); derr != nil && !gophercloud.ResponseCodeIs(derr, 404) {
			return imagestore.Image{}, fmt.Errorf("%w (deleting the incomplete image %s failed too: %v)", err, created.ID, derr)
		}
		return imagestore.Image{}, err
	}
	return img, nil
}

func (s *Store) fill(ctx context.Context, id string, src io.Reader, want string) (imagestore.Image, error) {
	h256, h5, h512 := sha256.New(), md5.New(), sha512.New()
	if err := imagedata.Upload(ctx, s.Client, id, io.TeeReader(src, io.MultiWriter(h256, h5, h512))).ExtractErr(); err != nil {
		return imagestore.Image{}, s.fail("uploading image "+id, err)
	}
	sum := hex.EncodeToString(h256.Sum(nil))
	if want != "" && sum != want {
		return imagestore.Image{}, fmt.Errorf("%w: the image's SHA-256 is %s, expected %s", imagestore.ErrChecksumMismatch, sum, want)
	}
	img, err := s.waitActive(ctx, id)
	if err != nil {
		return imagestore.Image{}, err
	}
	if img.Checksum != hex.EncodeToString(h5.Sum(nil)) || prop(img, "os_hash_value") != hex.EncodeToString(h512.Sum(nil)) {
		return imagestore.Image{}, fmt.Errorf("%w: glance stored image %s with checksum %s and os_hash_value %s, which are not the uploaded bytes'",
			imagestore.ErrChecksumMismatch, id, img.Checksum, prop(img, "os_hash_value"))
	}
	if want == "" {
		patch := images.UpdateOpts{images.UpdateImageProperty{Op: images.AddOp, Name: PropertySHA256, Value: sum}}
		updated, err := images.Update(ctx, s.Client, id, patch).Extract()
		if err != nil {
			return imagestore.Image{}, s.fail("recording the SHA-256 of image "+id, err)
		}
		img = *updated
	}
	return toImage(img), nil
}

func (s *Store) waitActive(ctx context.Context, id string) (images.Image, error) {
	timeout, poll := s.ActiveTimeout, s.Poll
	if timeout == 0 {
		timeout = 30 * time.Minute
	}
	if poll == 0 {
		poll = time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		img, err := images.Get(ctx, s.Client, id).Extract()
		if err != nil {
			return images.Image{}, s.fail("reading image "+id, err)
		}
		switch img.Status {
		case images.ImageStatusActive:
			return *img, nil
		case images.ImageStatusQueued, images.ImageStatusSaving, images.ImageStatusImporting:
		default:
			return *img, fmt.Errorf("glance at %s: image %s went to status %q", s.Client.Endpoint, id, img.Status)
		}
		if time.Now().After(deadline) {
			return *img, fmt.Errorf("glance at %s: image %s still %q after %s", s.Client.Endpoint, id, img.Status, timeout)
		}
		select {
		case <-ctx.Done():
			return *img, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Get finds an image by id, or by name when exactly one image has it.
func (s *Store) Get(ctx context.Context, id string) (imagestore.Image, error) {
	if uuidPattern.MatchString(id) {
		img, err := images.Get(ctx, s.Client, id).Extract()
		if gophercloud.ResponseCodeIs(err, 404) {
			return imagestore.Image{}, fmt.Errorf("image %q: %w", id, imagestore.ErrNotFound)
		}
		if err != nil {
			return imagestore.Image{}, s.fail("reading image "+id, err)
		}
		return toImage(*img), nil
	}
	pages, err := images.List(s.Client, images.ListOpts{Name: id}).AllPages(ctx)
	if err != nil {
		return imagestore.Image{}, s.fail("listing images named "+id, err)
	}
	found, err := images.ExtractImages(pages)
	if err != nil {
		return imagestore.Image{}, s.fail("listing images named "+id, err)
	}
	switch len(found) {
	case 1:
		return toImage(found[0]), nil
	case 0:
		return imagestore.Image{}, fmt.Errorf("image %q: %w", id, imagestore.ErrNotFound)
	}
	return imagestore.Image{}, fmt.Errorf("%w: several images are named %q; use the id", imagestore.ErrInvalid, id)
}

// List returns the images the service user sees, newest first.
func (s *Store) List(ctx context.Context) ([]imagestore.Image, error) {
	pages, err := images.List(s.Client, images.ListOpts{Sort: "created_at:desc"}).AllPages(ctx)
	if err != nil {
		return nil, s.fail("listing images", err)
	}
	found, err := images.ExtractImages(pages)
	if err != nil {
		return nil, s.fail("listing images", err)
	}
	out := make([]imagestore.Image, 0, len(found))
	for _, img := range found {
		out = append(out, toImage(img))
	}
	return out, nil
}

// Verify checks that Glance offers the image (active) with a SHA-256
// recorded and its own checksums; it does not download the bytes.
func (s *Store) Verify(ctx context.Context, id string) error {
	img, err := images.Get(ctx, s.Client, id).Extract()
	if gophercloud.ResponseCodeIs(err, 404) {
		return fmt.Errorf("image %q: %w", id, imagestore.ErrNotFound)
	}
	if err != nil {
		return s.fail("reading image "+id, err)
	}
	switch {
	case img.Status != images.ImageStatusActive:
		return fmt.Errorf("%w: glance image %s is %s, not active", imagestore.ErrInvalid, id, img.Status)
	case prop(*img, PropertySHA256) == "" || img.Checksum == "" || prop(*img, "os_hash_value") == "":
		return fmt.Errorf("%w: glance image %s has no recorded checksums (%s, checksum, os_hash_value)", imagestore.ErrChecksumMismatch, id, PropertySHA256)
	}
	return s.checkHeader(ctx, img.ID, img.DiskFormat)
}

// checkHeader reads the first bytes of a Glance image (a range request;
// a Glance that ignores the range is read no further) and refuses a
// header that is not a standalone image of the declared format: whoever
// can upload to Glance could otherwise have Nova's host open a file of
// its own through a backing or external data file.
func (s *Store) checkHeader(ctx context.Context, id, format string) error {
	resp, err := s.Client.Get(ctx, s.Client.ServiceURL("images", id, "file"), nil, &gophercloud.RequestOpts{
		MoreHeaders: map[string]string{"Range": fmt.Sprintf("bytes=0-%d", imagecheck.HeaderSize-1)}, KeepResponseBody: true,
		OkCodes: []int{200, 206}})
	if err != nil {
		return s.fail("reading the header of image "+id, err)
	}
	defer resp.Body.Close()
	head, err := imagecheck.ReadHeader(resp.Body)
	if err != nil {
		return s.fail("reading the header of image "+id, err)
	}
	if err := imagecheck.Header(head, format); err != nil {
		return fmt.Errorf("%w: glance image %s: %w", imagestore.ErrInvalid, id, err)
	}
	return nil
}

// Delete removes an image.
func (s *Store) Delete(ctx context.Context, id string) error {
	err := images.Delete(ctx, s.Client, id).ExtractErr()
	if gophercloud.ResponseCodeIs(err, 404) {
		return fmt.Errorf("image %q: %w", id, imagestore.ErrNotFound)
	}
	if err != nil {
		return s.fail("deleting image "+id, err)
	}
	return nil
}

func toImage(img images.Image) imagestore.Image {
	out := imagestore.Image{ID: img.ID, Name: img.Name, DiskFormat: img.DiskFormat, ContainerFormat: img.ContainerFormat,
		SHA256: prop(img, PropertySHA256), SizeBytes: img.SizeBytes, Location: img.ID, Properties: map[string]string{}, CreatedAt: img.CreatedAt}
	for k, v := range img.Properties {
		if s, ok := v.(string); ok {
			out.Properties[k] = s
		}
	}
	if img.Checksum != "" {
		out.Properties[imagestore.PropertyChecksum] = img.Checksum
	}
	return out
}

func prop(img images.Image, key string) string {
	if v, ok := img.Properties[key].(string); ok {
		return v
	}
	return ""
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}
