// Package swift is the OpenStack Swift object store, through gophercloud's
// objectstorage v1: objects in one container, objects larger than
// SmallSize as Static Large Objects whose segments live in a second
// container (Container+"_segments"), so listings show whole objects only.
//
// Nothing is held whole in memory: an object up to SmallSize is buffered
// and sent with its MD5 as ETag; a larger one streams into segments of at
// most SegmentSize with chunked transfer (gophercloud is told NoETag, or it
// would read the body into memory to hash it), each segment's MD5 computed
// on the way and compared with the ETag Swift answers. A source that
// pauses for StallTimeout ends the segment being sent there, and the next
// segment's request opens only when data flows again: Swift's proxy cuts an
// upload whose body sends nothing for its client_timeout (60 s by default,
// answering 499 or, to a client still writing, a broken pipe), and a
// backup's stream can pause that long behind a busy guest. The manifest is
// put last, so the object is visible only when complete; a failed Put
// deletes its segments (and Delete finds any it could not).
//
// Like every object store it keeps bytes only and must not interpret them.
package swift

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/containers"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/objects"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/swauth"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"strata/controller/objectstore"
)

const (
	// DefaultSegmentSize is the largest SLO segment (Swift's own limit
	// for one object is 5 GiB).
	DefaultSegmentSize = 1 << 30
	// DefaultSmallSize is the largest object sent as one plain object.
	DefaultSmallSize = 8 << 20
	// DefaultStallTimeout is how long a segment's request waits for more
	// of the source before it ends the segment: well under the 60 s of
	// Swift's default client_timeout.
	DefaultStallTimeout = 20 * time.Second
	// chunkSize is what the source is read in; at most three chunks are
	// held at once.
	chunkSize      = 256 << 10
	maxSegmentSize = 5 << 30
)

// Store keeps objects in a Swift container.
type Store struct {
	client           *gophercloud.ServiceClient
	container        string
	segmentContainer string
	segmentSize      int64
	smallSize        int64
	stallTimeout     time.Duration
}

var _ objectstore.Store = (*Store)(nil)

// Options configure a Store; zero values take the defaults.
type Options struct {
	// Container holds the objects; it is created if missing.
	Container string
	// SegmentContainer holds large objects' segments (default
	// Container+"_segments"); created if missing.
	SegmentContainer string
	SegmentSize      int64 // DefaultSegmentSize
	SmallSize        int64 // DefaultSmallSize, at most SegmentSize
	// StallTimeout ends a segment when the source sends nothing for this
	// long (DefaultStallTimeout); keep it below the proxy's client_timeout.
	StallTimeout time.Duration
}

// New returns a store on client (an object-storage service client:
// openstack.NewObjectStorageV1 with Keystone, or TempAuth) and creates its
// containers if they are missing.
func New(ctx context.Context, client *gophercloud.ServiceClient, opts Options) (*Store, error) {
	s := &Store{client: client, container: opts.Container, segmentContainer: opts.SegmentContainer,
		segmentSize: opts.SegmentSize, smallSize: opts.SmallSize, stallTimeout: opts.StallTimeout}
	if s.container == "" {
		return nil, errors.New("swift object store: no container")
	}
	if s.segmentContainer == "" {
		s.segmentContainer = s.container + "_segments"
	}
	if s.segmentSize == 0 {
		s.segmentSize = DefaultSegmentSize
	}
	if s.stallTimeout <= 0 {
		s.stallTimeout = DefaultStallTimeout
	}
	if s.smallSize == 0 {
		s.smallSize = min(DefaultSmallSize, s.segmentSize)
	}
	if s.segmentSize < 1 || s.segmentSize > maxSegmentSize || s.smallSize < 1 || s.smallSize > s.segmentSize {
		return nil, fmt.Errorf("swift object store: segment size %d (1..5 GiB) and small size %d (1..segment size) out of range", s.segmentSize, s.smallSize)
	}
	for _, c := range []string{s.container, s.segmentContainer} {
		if err := containers.Create(ctx, client, c, nil).Err; err != nil {
			return nil, s.fail("create container "+c, err)
		}
	}
	return s, nil
}

// TempAuth returns an object-storage client authenticated by Swift's
// tempauth (or swauth) at authURL (…/auth/v1.0), which authenticates
// again when a token is refused or about to expire.
func TempAuth(ctx context.Context, authURL, user, key string) (*gophercloud.ServiceClient, error) {
	// gophercloud's swauth appends auth/v1.0 to the base itself.
	base := strings.TrimSuffix(strings.TrimSuffix(authURL, "/"), "auth/v1.0")
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	pc := &gophercloud.ProviderClient{
		IdentityBase:     base,
		IdentityEndpoint: base,
		HTTPClient:       http.Client{Transport: transport()},
	}
	pc.UseTokenLock()
	opts := swauth.AuthOpts{User: user, Key: key}
	client, err := swauth.NewObjectStorageV1(ctx, pc, opts)
	if err != nil {
		return nil, fmt.Errorf("swift tempauth at %s as %s: %w", authURL, user, err)
	}
	pc.ReauthFunc = func(ctx context.Context) error {
		auth, err := swauth.Auth(ctx, pc, opts).Extract()
		if err != nil {
			return fmt.Errorf("swift tempauth at %s as %s: %w", authURL, user, err)
		}
		pc.SetToken(auth.Token)
		return nil
	}
	return client, nil
}

// transport is the default transport with a bound on waiting for a
// response, so a server that accepts connections and never answers is an
// error, not a hang.
func transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 5 * time.Minute
	return t
}

func (s *Store) fail(action string, err error) error {
	if code, ok := errors.AsType[gophercloud.ErrUnexpectedResponseCode](err); ok {
		return fmt.Errorf("swift at %s: %s: HTTP %d: %s", s.client.Endpoint, action, code.Actual, trunc(string(code.Body)))
	}
	return fmt.Errorf("swift at %s: %s: %w", s.client.Endpoint, action, err)
}

func trunc(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

func is404(err error) bool {
	return gophercloud.ResponseCodeIs(err, http.StatusNotFound)
}

func (s *Store) notFound(action, name string, err error) error {
	if is404(err) {
		return fmt.Errorf("swift at %s: %s %s: %w", s.client.Endpoint, action, name, objectstore.ErrNotFound)
	}
	return s.fail(action+" "+name, err)
}

func check(name string) error {
	if !objectstore.ValidName(name) {
		return fmt.Errorf("swift object store: %w: %q", objectstore.ErrInvalid, name)
	}
	return nil
}

// segmentPrefix is where name's segments live in the segment container:
// "@" cannot occur in an object name, so the segments of "a" and of "a/b"
// never share a prefix.
func segmentPrefix(name string) string { return name + "@" }

// sourceReader remembers the first error the caller's reader returned, so
// a Put that failed because its source did reports that error, not what
// the HTTP client made of it.
// (A large object's source is read by another goroutine, hence the lock.)
type sourceReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
	return n, err
}

func (s *sourceReader) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Put stores r as one plain object if it ends within SmallSize bytes,
// else as an SLO.
func (s *Store) Put(ctx context.Context, name string, r io.Reader) (objectstore.Object, error) {
	if err := check(name); err != nil {
		return objectstore.Object{}, err
	}
	src := &sourceReader{r: r}
	head := make([]byte, s.smallSize+1)
	n, err := io.ReadFull(src, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return objectstore.Object{}, fmt.Errorf("swift object store: put %s: %w", name, err)
	}
	if int64(n) <= s.smallSize {
		return s.putSmall(ctx, name, head[:n])
	}
	return s.putLarge(ctx, name, io.MultiReader(bytes.NewReader(head[:n]), src), src)
}

func (s *Store) putSmall(ctx context.Context, name string, data []byte) (objectstore.Object, error) {
	sum := md5.Sum(data)
	etag := hex.EncodeToString(sum[:])
	res := objects.Create(ctx, s.client, s.container, name, objects.CreateOpts{
		Content: bytes.NewReader(data), ContentLength: int64(len(data)), ETag: etag,
		ContentType: "application/octet-stream",
	})
	if res.Err != nil {
		return objectstore.Object{}, s.fail("put "+name, res.Err)
	}
	if err := s.dropOldSegments(ctx, name, ""); err != nil {
		return objectstore.Object{}, err
	}
	return s.Stat(ctx, name)
}

// sloSegment is an entry of an SLO manifest (multipart-manifest=put).
type sloSegment struct {
	Path      string `json:"path"`
	ETag      string `json:"etag"`
	SizeBytes int64  `json:"size_bytes"`
}

func uploadID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return fmt.Sprintf("%d-%s", time.Now().UnixNano(), hex.EncodeToString(b))
}

func (s *Store) putLarge(ctx context.Context, name string, r io.Reader, src *sourceReader) (obj objectstore.Object, err error) {
	id := uploadID()
	var segs []sloSegment
	var names []string
	defer func() {
		if err == nil {
			return
		}
		if serr := src.failure(); serr != nil {
			err = fmt.Errorf("swift object store: put %s: reading the data: %w (%v)", name, serr, err)
		}
		// A fresh context: the Put's own may be what was cancelled.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for _, seg := range names {
			objects.Delete(cctx, s.client, s.segmentContainer, seg, nil)
		}
	}()
	f := newFeeder(r)
	defer f.stop()
	for i := 1; ; i++ {
		// Open a segment's request only once there is data for it: a
		// paused source then holds no request open for Swift to cut.
		if more, err := f.wait(ctx); err != nil {
			return obj, fmt.Errorf("swift object store: put %s: %w", name, err)
		} else if !more {
			break
		}
		seg := fmt.Sprintf("%s%s/%08d", segmentPrefix(name), id, i)
		names = append(names, seg)
		sr := &segmentReader{ctx: ctx, f: f, left: s.segmentSize, stall: s.stallTimeout}
		cr := &countingReader{r: sr, h: md5.New()}
		res := objects.Create(ctx, s.client, s.segmentContainer, seg, objects.CreateOpts{
			Content: cr, NoETag: true, ContentType: "application/octet-stream",
		})
		srcErr := sr.close()
		if res.Err != nil {
			return obj, s.fail(fmt.Sprintf("put %s: segment %d (%d bytes sent)", name, i, cr.n), res.Err)
		}
		hdr, herr := res.Extract()
		sum := hex.EncodeToString(cr.h.Sum(nil))
		if herr != nil || strings.Trim(hdr.ETag, `"`) != sum {
			return obj, fmt.Errorf("swift at %s: put %s: segment %d: Swift stored ETag %q, the data sent has MD5 %s", s.client.Endpoint, name, i, hdr.ETag, sum)
		}
		if srcErr != nil {
			return obj, fmt.Errorf("swift object store: put %s: segment %d: %w", name, i, srcErr)
		}
		segs = append(segs, sloSegment{Path: "/" + s.segmentContainer + "/" + seg, ETag: sum, SizeBytes: cr.n})
	}
	manifest, _ := json.Marshal(segs)
	res := objects.Create(ctx, s.client, s.container, name, objects.CreateOpts{
		// No ETag: on a manifest Swift checks it against the segments'
		// joint tag, not the body's MD5 (each segment's was checked).
		Content: bytes.NewReader(manifest), ContentLength: int64(len(manifest)), MultipartManifest: "put",
		NoETag: true, ContentType: "application/octet-stream",
	})
	if res.Err != nil {
		return obj, s.fail("put "+name+": SLO manifest", res.Err)
	}
	if err := s.dropOldSegments(ctx, name, id); err != nil {
		return obj, err
	}
	return s.Stat(ctx, name)
}

// feeder reads the source in its own goroutine, so that a segment's
// request can stop waiting for it.
type feeder struct {
	ch   chan []byte // closed at the source's end, after err is set
	done chan struct{}
	err  error
	// mu guards pending and ended, and is held through a segment's Read:
	// the HTTP client may still read a request's body after the request
	// returned (an early answer, a cancelled Put).
	mu      sync.Mutex
	pending []byte
	ended   bool
}

func newFeeder(r io.Reader) *feeder {
	f := &feeder{ch: make(chan []byte, 1), done: make(chan struct{})}
	go func() {
		defer close(f.ch)
		for {
			b := make([]byte, chunkSize)
			n, err := io.ReadFull(r, b)
			if n > 0 {
				select {
				case f.ch <- b[:n]:
				case <-f.done:
					return
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil {
				f.err = err
				return
			}
		}
	}()
	return f
}

// stop lets the reading goroutine end once its current Read returns.
func (f *feeder) stop() { close(f.done) }

// next takes the next chunk into pending, waiting at most stall (0: no
// bound). It reports false when the source has ended or stall passed.
func (f *feeder) next(ctx context.Context, stall time.Duration) (bool, error) {
	var timeout <-chan time.Time
	if stall > 0 {
		t := time.NewTimer(stall)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case b, ok := <-f.ch:
		if !ok {
			f.ended = true
			return false, f.err
		}
		f.pending = b
		return true, nil
	case <-timeout:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// wait blocks until there is data to send (true) or the source ended.
func (f *feeder) wait(ctx context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) > 0 {
		return true, nil
	}
	if f.ended {
		return false, f.err
	}
	return f.next(ctx, 0)
}

// segmentReader is one segment's body: at most left bytes, ending early
// when the source pauses for stall.
type segmentReader struct {
	ctx   context.Context
	f     *feeder
	left  int64
	stall time.Duration
	// Under f.mu: err is the source's error or the Put's cancellation;
	// a closed reader reads nothing more.
	err    error
	closed bool
}

// close detaches the reader from the feeder, waiting for a Read the HTTP
// client may still be in; it returns that reader's error.
func (s *segmentReader) close() error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.closed = true
	return s.err
}

func (s *segmentReader) Read(p []byte) (int, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.closed || s.left == 0 {
		return 0, io.EOF
	}
	if len(s.f.pending) == 0 {
		if s.f.ended {
			return 0, io.EOF
		}
		ok, err := s.f.next(s.ctx, s.stall)
		if err != nil {
			s.err = err
			return 0, err
		}
		if !ok {
			return 0, io.EOF
		}
	}
	n := copy(p[:min(int64(len(p)), s.left)], s.f.pending)
	s.f.pending = s.f.pending[n:]
	s.left -= int64(n)
	return n, nil
}

// countingReader counts and hashes what passes.
type countingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	return n, err
}

// dropOldSegments deletes name's segments of every upload but keep: those
// of the object it replaced, and those failed Puts left.
func (s *Store) dropOldSegments(ctx context.Context, name, keep string) error {
	segs, err := s.listNames(ctx, s.segmentContainer, segmentPrefix(name))
	if err != nil {
		return s.fail("list segments of "+name, err)
	}
	var errs []error
	for _, seg := range segs {
		if keep != "" && strings.HasPrefix(seg, segmentPrefix(name)+keep+"/") {
			continue
		}
		if err := objects.Delete(ctx, s.client, s.segmentContainer, seg, nil).Err; err != nil && !is404(err) {
			errs = append(errs, s.fail("delete segment "+seg, err))
		}
	}
	return errors.Join(errs...)
}

// Get streams the object (an SLO's segments one after the other, joined
// by Swift).
func (s *Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := check(name); err != nil {
		return nil, err
	}
	res := objects.Download(ctx, s.client, s.container, name, nil)
	if res.Err != nil {
		return nil, s.notFound("get", name, res.Err)
	}
	return res.Body, nil
}

// Stat asks for the object's headers.
func (s *Store) Stat(ctx context.Context, name string) (objectstore.Object, error) {
	if err := check(name); err != nil {
		return objectstore.Object{}, err
	}
	h, err := objects.Get(ctx, s.client, s.container, name, nil).Extract()
	if err != nil {
		return objectstore.Object{}, s.notFound("stat", name, err)
	}
	return objectstore.Object{Name: name, Size: h.ContentLength, ETag: strings.Trim(h.ETag, `"`), Modified: h.LastModified.UTC()}, nil
}

// Delete removes the object, then every segment kept for its name: those
// of an SLO and those failed Puts left. (multipart-manifest=delete would
// refuse plain objects, and could not find the failed Puts' segments.)
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := check(name); err != nil {
		return err
	}
	err := objects.Delete(ctx, s.client, s.container, name, nil).Err
	if err != nil && !is404(err) {
		return s.fail("delete "+name, err)
	}
	return s.dropOldSegments(ctx, name, "")
}

// List pages through the container's listing.
func (s *Store) List(ctx context.Context, prefix string) ([]objectstore.Object, error) {
	if !objectstore.ValidPrefix(prefix) {
		return nil, fmt.Errorf("swift object store: list: %w: prefix %q", objectstore.ErrInvalid, prefix)
	}
	out := []objectstore.Object{}
	err := objects.List(s.client, s.container, objects.ListOpts{Prefix: prefix}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		infos, err := objects.ExtractInfo(p)
		if err != nil {
			return false, err
		}
		for _, o := range infos {
			out = append(out, objectstore.Object{Name: o.Name, Size: o.Bytes, ETag: o.Hash, Modified: o.LastModified.UTC()})
		}
		return true, nil
	})
	if err != nil {
		return nil, s.fail(fmt.Sprintf("list %q", prefix), err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Store) listNames(ctx context.Context, container, prefix string) ([]string, error) {
	var out []string
	err := objects.List(s.client, container, objects.ListOpts{Prefix: prefix}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		names, err := objects.ExtractNames(p)
		out = append(out, names...)
		return err == nil, err
	})
	return out, err
}

// SegmentNames lists the segments kept for name in the segment container
// (for tests and the garbage collector's checks).
func (s *Store) SegmentNames(ctx context.Context, name string) ([]string, error) {
	names, err := s.listNames(ctx, s.segmentContainer, segmentPrefix(name))
	if err != nil {
		return nil, s.fail("list segments of "+name, err)
	}
	return names, nil
}

// AllSegments lists everything in the segment container.
func (s *Store) AllSegments(ctx context.Context) ([]string, error) {
	names, err := s.listNames(ctx, s.segmentContainer, "")
	if err != nil {
		return nil, s.fail("list segments", err)
	}
	return names, nil
}
