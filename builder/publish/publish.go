// Package publish is the last step of the image pipeline: it uploads a
// built image to Glance and registers it as a datastore version — in the
// strata controller and, when asked, in a real Trove — in one call, what
// an operator did by hand with `glance image-create`, `trove-manage
// datastore_version_update` and `db_load_datastore_config_parameters`.
//
// Everything goes over HTTP through gophercloud: Keystone for the token
// (clouds.yaml or OS_* variables), Glance v2 for the image, and Trove's
// management API (mgmt/datastore-versions and their parameters) for the
// version, which the strata controller serves too. So publishing into the
// embedded controller (which answers a Glance v2 subset and lists itself
// as the image service) and into a real OpenStack is the same code.
//
// Publishing is idempotent by content: an image is found by its SHA-256
// (property strata_sha256, tag strata) before anything is uploaded, and an
// existing version is updated rather than created twice. Glance's own
// checksum (MD5) and os_hash_value (SHA-512) are checked against ours.
// A failed upload or verification deletes the new image; a failed
// registration keeps the verified image (see Publish).
//
// The package must not import the controller: it is a client of it.
package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"strata/agent/wire"
	"strata/builder/imagecheck"
	"strata/builder/manifest"
	"strata/builder/recipe"
)

// Options say what to publish and where.
type Options struct {
	Recipe        string    // images/<x>.yaml: datastore section (name, version, manager, port, rules, config_template...)
	Image         string    // the built qcow2; NAME.qcow2.sha256 and NAME.manifest.json sit beside it
	Cloud         string    // clouds.yaml cloud name; "" = OS_* environment (gophercloud clientconfig)
	ControllerURL string    // the strata controller's API (database service); "" = from the service catalog
	TroveURL      string    // also register in this real Trove through its mgmt API; "" = none
	Out           io.Writer // progress lines
}

// Result says what publishing did.
type Result struct {
	ImageID  string
	Uploaded bool // false: an identical image was already there
	// VersionID is the strata controller's version; "" when there is no
	// strata controller (the version went to a Trove only).
	VersionID      string
	VersionCreated bool   // false: the version existed and was updated (or unchanged)
	TroveVersionID string // when TroveURL was given
	Seconds        float64
}

// Timeouts; variables so tests can shorten them.
var (
	activeTimeout  = 30 * time.Minute
	cleanupTimeout = 30 * time.Second
)

// inputs are the validated things a publish reads from disk.
type inputs struct {
	recipe   *recipe.Recipe
	manifest *manifest.Manifest
	format   string
	minDisk  int
	rules    []wire.ParameterRule
	sha256   string // from IMAGE.sha256
}

func readInputs(o Options) (*inputs, error) {
	if o.Recipe == "" || o.Image == "" {
		return nil, errors.New("publish: a recipe and an image are required")
	}
	rc, err := recipe.Load(o.Recipe)
	if err != nil {
		return nil, err
	}
	ds := rc.Datastore
	if ds == nil {
		return nil, fmt.Errorf("recipe %s has no datastore section: only datastore images are published", o.Recipe)
	}
	if ds.Port == 0 {
		return nil, fmt.Errorf("recipe %s: key datastore.port: required to publish", o.Recipe)
	}
	in := &inputs{recipe: rc}
	ext := filepath.Ext(o.Image)
	switch ext {
	case ".qcow2":
		in.format = "qcow2"
	case ".raw", ".img":
		in.format = "raw"
	default:
		return nil, fmt.Errorf("image %s: want a .qcow2 or .raw file", o.Image)
	}
	if _, err := os.Stat(o.Image); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if in.sha256, err = recordedSHA256(o.Image); err != nil {
		return nil, err
	}
	mpath := strings.TrimSuffix(o.Image, ext) + ".manifest.json"
	m, err := manifest.Read(mpath)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	in.manifest = m
	if md := m.Datastore; md != nil && (md.Name != ds.Name || md.Version != ds.Version) {
		return nil, fmt.Errorf("%s was built for datastore %s %s, but recipe %s describes %s %s", o.Image, md.Name, md.Version, o.Recipe, ds.Name, ds.Version)
	}
	for _, out := range m.Outputs {
		if filepath.Base(out.File) == filepath.Base(o.Image) && out.VirtualSize > 0 {
			in.minDisk = int((out.VirtualSize + 1<<30 - 1) >> 30)
		}
	}
	if ds.Rules != "" {
		data, err := os.ReadFile(ds.Rules)
		if err != nil {
			return nil, fmt.Errorf("recipe %s: key datastore.rules: %w", o.Recipe, err)
		}
		if in.rules, err = wire.ParseRules(data); err != nil {
			return nil, fmt.Errorf("validation rules %s: %w", ds.Rules, err)
		}
	}
	return in, nil
}

// Publish uploads o.Image to Glance (unless an image with the same SHA-256
// is there), waits for it to be active, checks Glance's checksum and
// os_hash_value against the file, and registers the recipe's datastore
// version booting it, with the recipe's validation rules as the version's
// configuration parameters: in the strata controller, then in a Trove
// (see registries: a cloud whose database service is a plain Trove needs
// no strata controller at all).
//
// The image is checked first (builder/imagecheck: a standalone image of
// its format, no backing or external data file). Nothing is uploaded
// before every service has answered once. A failed
// upload, a Glance that does not reach active, or a checksum mismatch
// deletes the image it created. A registration that fails afterwards keeps
// the image: it is complete and verified, found again by its SHA-256 the
// next time (so a retry uploads nothing), and a version registered before
// the failure may already boot it. The error then says so and names the
// image; the partial Result is returned with it.
func Publish(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	in, err := readInputs(o)
	if err != nil {
		return nil, err
	}
	ds := in.recipe.Datastore

	fmt.Fprintf(out, "publish: hashing %s\n", o.Image)
	d, err := hashFile(ctx, o.Image)
	if err != nil {
		return nil, err
	}
	if d.SHA256 != in.sha256 {
		return nil, fmt.Errorf("%s hashes to %s but %s.sha256 says %s: the file changed after the build", o.Image, d.SHA256, filepath.Base(o.Image), in.sha256)
	}
	// A backing or external data file would name a file of whichever host
	// opens the image: refused before any service is asked anything.
	if _, err := imagecheck.File(ctx, o.Image, in.format, imagecheck.Options{}); err != nil {
		return nil, fmt.Errorf("%s: %w; nothing was uploaded", o.Image, err)
	}

	sess, err := authenticate(ctx, o.Cloud)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "publish: authenticated at %s (project %s)\n", sess.authURL, sess.projectID)
	imgClient, err := openstack.NewImageV2(sess.provider, sess.endpoint)
	if err != nil {
		return nil, fmt.Errorf("keystone at %s: the service catalog has no image (Glance) endpoint: %w", sess.authURL, err)
	}
	g := &glance{client: imgClient, out: out}
	ctl, trove, err := registries(ctx, sess, o, out)
	if err != nil {
		return nil, err
	}

	res := &Result{}
	img, uploaded, err := publishImage(ctx, g, o, in, d)
	if err != nil {
		return nil, err
	}
	res.ImageID, res.Uploaded = img.ID, uploaded
	kept := func(err error) error {
		res.Seconds = time.Since(start).Seconds()
		return fmt.Errorf("%w\n(image %s stays in Glance: complete, verified, tagged %q with %s=%s; publishing again reuses it without uploading — or remove it with `openstack image delete %s`)",
			err, img.ID, TagStrata, PropertySHA256, d.SHA256, img.ID)
	}

	spec := versionSpec{Datastore: ds.Name, Name: ds.Version, Manager: ds.Manager, Image: img.ID,
		Packages: ds.Packages, Port: ds.Port, BootTimeout: ds.BootTimeout}
	if spec.BootTimeout == 0 {
		spec.BootTimeout = 900
	}
	if ctl != nil {
		res.VersionID, res.VersionCreated, err = ctl.register(ctx, spec, out)
		if err != nil {
			return res, kept(err)
		}
		if err := syncRules(ctx, ctl, res.VersionID, in, out); err != nil {
			return res, kept(err)
		}
	}
	if trove != nil {
		var created bool
		if res.TroveVersionID, created, err = trove.register(ctx, spec, out); err != nil {
			return res, kept(err)
		}
		if ctl == nil {
			res.VersionCreated = created
		}
		if err := syncRules(ctx, trove, res.TroveVersionID, in, out); err != nil {
			return res, kept(err)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	id := res.VersionID
	if id == "" {
		id = res.TroveVersionID + " (Trove)"
	}
	fmt.Fprintf(out, "publish: %s %s → image %s, version %s in %.1f s\n", ds.Name, ds.Version, res.ImageID, id, res.Seconds)
	return res, nil
}

// registries decides where the version is registered, before anything is
// uploaded: the strata controller (ControllerURL, else the catalog's
// database service when that is one), and a Trove (TroveURL, else the
// catalog's database service when that is a Trove rather than strata:
// the cloud of an operator who uses strata only to build images). At
// least one must answer.
func registries(ctx context.Context, sess *session, o Options, out io.Writer) (ctl, trove *mgmt, err error) {
	if o.ControllerURL != "" {
		if ctl, err = sess.mgmt("strata controller", o.ControllerURL, true); err != nil {
			return nil, nil, err
		}
		if _, isStrata, err := ctl.probe(ctx); err != nil {
			return nil, nil, err
		} else if !isStrata {
			return nil, nil, fmt.Errorf("%s (--controller-url) is not a strata controller (a Trove?): give a Trove's URL with --trove-url instead", ctl.client.Endpoint)
		}
	} else {
		db, err := sess.mgmt("database service", "", false)
		switch {
		case err != nil && o.TroveURL == "":
			return nil, nil, fmt.Errorf("%w (or give a strata controller's URL with --controller-url, a Trove's with --trove-url)", err)
		case err != nil:
			fmt.Fprintf(out, "publish: the service catalog lists no database service: registering in the Trove at %s only\n", o.TroveURL)
		default:
			_, isStrata, err := db.probe(ctx)
			if err != nil {
				return nil, nil, err
			}
			switch {
			case isStrata:
				db.service, db.strata = "strata controller", true
				ctl = db
			case o.TroveURL == "":
				db.service = "trove"
				trove = db
				fmt.Fprintf(out, "publish: the catalog's database service %s is a Trove, not a strata controller: registering the version there\n", db.client.Endpoint)
			default:
				fmt.Fprintf(out, "publish: the catalog's database service %s is a Trove, not a strata controller: registering in the Trove at %s\n", db.client.Endpoint, o.TroveURL)
			}
		}
	}
	if o.TroveURL != "" {
		if trove, err = sess.mgmt("trove", o.TroveURL, false); err != nil {
			return nil, nil, err
		}
		if _, err := trove.versions(ctx); err != nil {
			return nil, nil, err
		}
	}
	return ctl, trove, nil
}

func syncRules(ctx context.Context, m *mgmt, versionID string, in *inputs, out io.Writer) error {
	if in.rules == nil {
		fmt.Fprintf(out, "%s: the recipe names no validation rules; configuration parameters left as they are\n", m.service)
		return nil
	}
	rep, err := m.syncRules(ctx, versionID, in.rules)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: configuration parameters of %s from %s: %d added, %d updated, %d removed, %d unchanged\n", m.service, versionID,
		filepath.Base(in.recipe.Datastore.Rules), len(rep.Added), len(rep.Updated), len(rep.Removed), len(rep.Unchanged))
	if len(rep.Skipped) > 0 {
		fmt.Fprintf(out, "%s: its management API takes integer and string parameters only; not registered: %s (trove-manage db_load_datastore_config_parameters can load them)\n",
			m.service, strings.Join(rep.Skipped, ", "))
	}
	return nil
}

// publishImage finds the image by content or uploads it.
func publishImage(ctx context.Context, g *glance, o Options, in *inputs, d digests) (images.Image, bool, error) {
	found, err := g.find(ctx, d.SHA256)
	if err != nil {
		return images.Image{}, false, err
	}
	for _, img := range found {
		if img.Status != images.ImageStatusActive {
			fmt.Fprintf(g.out, "glance: ignoring image %s with this content in status %s (an interrupted publish?)\n", img.ID, img.Status)
			continue
		}
		if err := verify(img, d); err != nil {
			fmt.Fprintf(g.out, "glance: ignoring image %s: %v\n", img.ID, err)
			continue
		}
		fmt.Fprintf(g.out, "glance: image %s (%s) already holds this content (sha256 %s…); not uploading\n", img.ID, img.Name, d.SHA256[:16])
		return img, false, nil
	}

	spec := imageSpec{Name: in.recipe.Name, DiskFormat: in.format, MinDiskGB: in.minDisk, Properties: imageProperties(in, d)}
	spec.Tags = []string{TagStrata, in.recipe.Datastore.Name + "-" + in.recipe.Datastore.Version}
	img, err := g.create(ctx, spec)
	if err != nil {
		return images.Image{}, false, err
	}
	// From here on a failure removes the image: it is incomplete or wrong.
	undo := func(cause error) error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := g.delete(cctx, img.ID); derr != nil {
			return fmt.Errorf("%w\n(deleting the incomplete image %s failed too: %v)", cause, img.ID, derr)
		}
		return fmt.Errorf("%w\n(the incomplete image %s was deleted)", cause, img.ID)
	}
	fmt.Fprintf(g.out, "glance: uploading %.1f MiB as image %s (%s)\n", float64(d.Size)/(1<<20), img.ID, spec.Name)
	t := time.Now()
	if err := g.upload(ctx, img.ID, o.Image); err != nil {
		return images.Image{}, false, undo(err)
	}
	img, err = g.waitActive(ctx, img.ID, activeTimeout)
	if err != nil {
		return images.Image{}, false, undo(err)
	}
	if err := verify(img, d); err != nil {
		return images.Image{}, false, undo(&ServiceError{Service: "glance", URL: g.client.Endpoint, Action: "verifying image " + img.ID, Message: err.Error()})
	}
	fmt.Fprintf(g.out, "glance: image %s active after %.1f s; checksum and os_hash_value (sha512) match the file\n", img.ID, time.Since(t).Seconds())
	return img, true, nil
}

// imageProperties are what a Nova host and an operator need to know about
// the image. No hw_firmware_type: strata images boot under BIOS and UEFI.
func imageProperties(in *inputs, d digests) map[string]string {
	ds := in.recipe.Datastore
	p := map[string]string{
		PropertySHA256:             d.SHA256,
		"strata_recipe":            in.recipe.Name,
		"strata_datastore":         ds.Name,
		"strata_datastore_version": ds.Version,
		"strata_manager":           ds.Manager,
		"os_type":                  "linux",
		"os_distro":                "debian",
		// The agent makes its key at first boot: give it entropy.
		"hw_rng_model": "virtio",
		"hw_disk_bus":  "virtio",
		"hw_vif_model": "virtio",
	}
	if arch := in.manifest.Arch; arch == "amd64" || arch == "" {
		p["architecture"] = "x86_64"
	}
	if a := in.manifest.Agent; a != nil {
		p["strata_agent_version"] = a.Version
		p["strata_agent_sha256"] = a.SHA256
	}
	return p
}

// mgmt returns the management API client for base ("" = the catalog's
// database endpoint).
func (s *session) mgmt(service, base string, strata bool) (*mgmt, error) {
	var endpoint string
	if base == "" {
		sc, err := openstack.NewDBV1(s.provider, s.endpoint)
		if err != nil {
			return nil, fmt.Errorf("keystone at %s: the service catalog has no database endpoint for the %s; give its URL: %w", s.authURL, service, err)
		}
		endpoint = sc.Endpoint
	} else {
		endpoint = projectEndpoint(base, s.projectID)
	}
	return &mgmt{service: service, strata: strata,
		client: &gophercloud.ServiceClient{ProviderClient: s.provider, Endpoint: endpoint, ResourceBase: endpoint}}, nil
}

// projectEndpoint turns a service URL into the project's API base:
// "http://h:8779" → "http://h:8779/v1.0/PROJECT/"; a URL with /v1.0/
// (as catalogs list Trove, %(tenant_id)s and all) is completed.
func projectEndpoint(base, project string) string {
	base = strings.TrimRight(base, "/")
	for _, tmpl := range []string{"%(tenant_id)s", "$(tenant_id)s", "%(project_id)s", "$(project_id)s"} {
		base = strings.ReplaceAll(base, tmpl, project)
	}
	switch {
	case strings.HasSuffix(base, "/v1.0"):
		return base + "/" + project + "/"
	case strings.Contains(base, "/v1.0/"):
		return base + "/"
	}
	return base + "/v1.0/" + project + "/"
}
