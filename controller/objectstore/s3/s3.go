// Package s3 is the S3 object store, through minio-go: objects in one
// bucket, an object larger than PartSize as a multipart upload, which the
// server makes visible only when it is completed (an aborted or failed
// one is not listed, and Delete removes its parts).
//
// Nothing is held whole in memory: a Put buffers at most one part (the
// first part is read ahead to tell a small object, sent in one PUT with
// its length, from a large one). Uploads are signed with UNSIGNED-PAYLOAD
// and no trailing checksums, which every S3 server accepts (Swift's
// s3api refuses aws-chunked bodies); SigV4 still signs the headers.
//
// Like every object store it keeps bytes only and must not interpret them.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"strata/controller/objectstore"
)

const (
	// DefaultPartSize: S3 allows 10 000 parts, some servers 1 000
	// (Swift's s3api), so 16 MiB parts hold objects up to ~15 GiB there.
	DefaultPartSize = 16 << 20
	minPartSize     = 5 << 20
)

// Options configure a Store.
type Options struct {
	// Endpoint is the server's URL (http:// or https://, host and port).
	Endpoint  string
	AccessKey string
	SecretKey string
	// Region must be the server's (SigV4 signs it); "us-east-1" if empty.
	Region string
	// Bucket holds the objects; it is created if missing.
	Bucket string
	// PartSize of multipart uploads (DefaultPartSize; at least 5 MiB).
	PartSize int64
	// Transport, if set, replaces the HTTP transport (custom CAs).
	Transport http.RoundTripper
}

// Store keeps objects in an S3 bucket.
type Store struct {
	client   *minio.Client
	bucket   string
	endpoint string
	partSize int64
}

var _ objectstore.Store = (*Store)(nil)

// New connects to the server and creates the bucket if it is missing.
func New(ctx context.Context, opts Options) (*Store, error) {
	u, err := url.Parse(opts.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("s3 object store: endpoint %q: want http(s)://host[:port]", opts.Endpoint)
	}
	if opts.Bucket == "" {
		return nil, errors.New("s3 object store: no bucket")
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.PartSize == 0 {
		opts.PartSize = DefaultPartSize
	}
	if opts.PartSize < minPartSize {
		return nil, fmt.Errorf("s3 object store: part size %d is below S3's minimum of 5 MiB", opts.PartSize)
	}
	tr := opts.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 5 * time.Minute
		tr = t
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(opts.AccessKey, opts.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Region:       opts.Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
		// A refused connection is reported, not retried for minutes.
		MaxRetries: 2,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 object store %s: %w", opts.Endpoint, err)
	}
	s := &Store{client: client, bucket: opts.Bucket, endpoint: opts.Endpoint, partSize: opts.PartSize}
	exists, err := client.BucketExists(ctx, opts.Bucket)
	if err != nil {
		return nil, s.fail("check bucket "+opts.Bucket, err)
	}
	if !exists {
		if err := client.MakeBucket(ctx, opts.Bucket, minio.MakeBucketOptions{Region: opts.Region}); err != nil {
			return nil, s.fail("create bucket "+opts.Bucket, err)
		}
	}
	return s, nil
}

func (s *Store) fail(action string, err error) error {
	if r := minio.ToErrorResponse(err); r.Code != "" {
		return fmt.Errorf("s3 at %s: %s: %s (HTTP %d): %s", s.endpoint, action, r.Code, r.StatusCode, r.Message)
	}
	return fmt.Errorf("s3 at %s: %s: %w", s.endpoint, action, err)
}

func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound
}

func (s *Store) notFound(action, name string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("s3 at %s: %s %s: %w", s.endpoint, action, name, objectstore.ErrNotFound)
	}
	return s.fail(action+" "+name, err)
}

func check(name string) error {
	if !objectstore.ValidName(name) {
		return fmt.Errorf("s3 object store: %w: %q", objectstore.ErrInvalid, name)
	}
	return nil
}

// sourceReader remembers the first error the caller's reader returned.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// Put sends an object that ends within the first part in one PUT, a
// larger one as a multipart upload of unknown length.
func (s *Store) Put(ctx context.Context, name string, r io.Reader) (objectstore.Object, error) {
	if err := check(name); err != nil {
		return objectstore.Object{}, err
	}
	src := &sourceReader{r: r}
	head := make([]byte, s.partSize+1)
	n, err := io.ReadFull(src, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return objectstore.Object{}, fmt.Errorf("s3 object store: put %s: %w", name, err)
	}
	opts := minio.PutObjectOptions{
		ContentType:          "application/octet-stream",
		PartSize:             uint64(s.partSize),
		DisableContentSha256: true,
		SendContentMd5:       true,
	}
	var body io.Reader
	size := int64(-1)
	if int64(n) <= s.partSize {
		body, size = bytes.NewReader(head[:n]), int64(n)
	} else {
		body = io.MultiReader(bytes.NewReader(head[:n]), src)
	}
	_, err = s.client.PutObject(ctx, s.bucket, name, body, size, opts)
	if err != nil {
		if src.err != nil {
			return objectstore.Object{}, fmt.Errorf("s3 object store: put %s: reading the data: %w (%v)", name, src.err, err)
		}
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		return objectstore.Object{}, s.fail("put "+name, err)
	}
	return s.Stat(ctx, name)
}

// Get opens the object; the first request is made here, so a missing
// object is reported by Get, not by the first Read.
func (s *Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := check(name); err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.notFound("get", name, err)
	}
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, s.notFound("get", name, err)
	}
	return obj, nil
}

// Stat asks for the object's headers.
func (s *Store) Stat(ctx context.Context, name string) (objectstore.Object, error) {
	if err := check(name); err != nil {
		return objectstore.Object{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, name, minio.StatObjectOptions{})
	if err != nil {
		return objectstore.Object{}, s.notFound("stat", name, err)
	}
	return object(info), nil
}

func object(info minio.ObjectInfo) objectstore.Object {
	return objectstore.Object{Name: info.Key, Size: info.Size, ETag: strings.Trim(info.ETag, `"`), Modified: info.LastModified.UTC()}
}

// Delete removes the object and the parts of unfinished uploads of it.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := check(name); err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, name, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return s.fail("delete "+name, err)
	}
	ups, err := s.uploads(ctx, name)
	if err != nil {
		return err
	}
	core := minio.Core{Client: s.client}
	for _, u := range ups {
		if u.Key != name {
			continue
		}
		if err := core.AbortMultipartUpload(ctx, s.bucket, name, u.UploadID); err != nil && !isNotFound(err) {
			return s.fail("delete unfinished upload "+u.UploadID+" of "+name, err)
		}
	}
	return nil
}

// uploads lists the multipart uploads below prefix. It walks with the
// delimiter "/": Swift 2.30's s3api answers an empty delimiter (which
// minio-go always sends for a recursive listing, and uses to find uploads
// to abort) with one empty common prefix and no uploads.
func (s *Store) uploads(ctx context.Context, prefix string) ([]minio.ObjectMultipartInfo, error) {
	core := minio.Core{Client: s.client}
	var out []minio.ObjectMultipartInfo
	keyMarker, idMarker := "", ""
	for {
		res, err := core.ListMultipartUploads(ctx, s.bucket, prefix, keyMarker, idMarker, "/", 1000)
		if err != nil {
			return nil, s.fail(fmt.Sprintf("list unfinished uploads below %q", prefix), err)
		}
		out = append(out, res.Uploads...)
		for _, p := range res.CommonPrefixes {
			if p.Prefix == "" || p.Prefix == prefix {
				continue
			}
			sub, err := s.uploads(ctx, p.Prefix)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		}
		if !res.IsTruncated {
			return out, nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// List pages through the bucket's listing.
func (s *Store) List(ctx context.Context, prefix string) ([]objectstore.Object, error) {
	if !objectstore.ValidPrefix(prefix) {
		return nil, fmt.Errorf("s3 object store: list: %w: prefix %q", objectstore.ErrInvalid, prefix)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the lister if we return early
	out := []objectstore.Object{}
	for info := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if info.Err != nil {
			return nil, s.fail(fmt.Sprintf("list %q", prefix), info.Err)
		}
		out = append(out, object(info))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Unfinished lists the objects that have multipart uploads in progress
// or abandoned (for tests and operators' checks).
func (s *Store) Unfinished(ctx context.Context) ([]string, error) {
	ups, err := s.uploads(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, u := range ups {
		out = append(out, u.Key+" (upload "+u.UploadID+")")
	}
	return out, nil
}
