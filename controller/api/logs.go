package api

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"strata/agent/wire"
	"strata/controller/guestlogs"
	"strata/controller/instances"
	"strata/controller/objectstore"
)

// logRoutes registers Trove's guest log routes and, for the client's
// `log save` and `log tail` (which read published logs from the
// "object-store" service of the catalog, as Swift), a read-only Swift
// view of the published logs under /logstore/v1/{project}.
func (s *Server) logRoutes(mux *http.ServeMux, p string) {
	s.route(mux, "GET "+p+"/instances/{id}/log", s.listLogs)
	s.route(mux, "POST "+p+"/instances/{id}/log", s.logAction)
	s.route(mux, "GET /logstore/v1/{project}/{container}", s.logContainer)
	s.route(mux, "GET /logstore/v1/{project}/{container}/{object...}", s.logObject)
	s.route(mux, "HEAD /logstore/v1/{project}/{container}/{object...}", s.logObject)
}

var logNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// logView is Trove's guest log view. type is USER for logs the user may
// switch on and off, SYS for those always written; status follows Trove:
// Disabled (a USER log switched off), Unavailable (no file yet), Enabled
// (a USER log on, nothing in it yet), Ready (content, nothing published),
// Published (everything published), Partial (published, more written
// since).
func logView(c *call, in instances.Instance, l wire.LogInfo, meta guestlogs.Meta, published bool) map[string]any {
	typ := "SYS"
	if l.Switchable {
		typ = "USER"
	}
	var pub, pending int64
	if published {
		pub = meta.Bytes
		pending = max(l.SizeBytes-meta.Bytes, 0)
		if l.SizeBytes < meta.Bytes {
			pending = l.SizeBytes // rotated or truncated since
		}
	} else {
		pending = l.SizeBytes
	}
	status := "Ready"
	switch {
	case l.Type == "agent":
		// The agent's log is the journal: no size to compare with; a
		// publish takes its last lines.
		pending = 0
		if published {
			status = "Published"
		}
	case l.Switchable && !l.Enabled:
		status = "Disabled"
	case published && pending == 0:
		status = "Published"
	case published:
		status = "Partial"
	case l.SizeBytes == 0 && l.Switchable:
		status = "Enabled"
	case l.SizeBytes == 0:
		status = "Unavailable"
	}
	return map[string]any{
		"name": l.Name, "type": typ, "status": status, "published": pub, "pending": pending,
		"container": guestlogs.Container, "prefix": guestlogs.Prefix(in.ID, l.Name), "metafile": guestlogs.Metafile(in.ID, l.Name),
	}
}

func (s *Server) published(c *call, in instances.Instance, name string) (guestlogs.Meta, bool, error) {
	if s.GuestLogs == nil {
		return guestlogs.Meta{}, false, nil
	}
	return s.GuestLogs.Published(c.ctx(), in.ID, name)
}

func (s *Server) listLogs(w http.ResponseWriter, c *call) error {
	var list wire.ListLogsResult
	in, err := s.guestQuery(c, wire.KindListLogs, nil, &list)
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, l := range list.Logs {
		meta, ok, err := s.published(c, in, l.Name)
		if err != nil {
			return err
		}
		out = append(out, logView(c, in, l, meta, ok))
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": out})
	return nil
}

// logFlag is one of the action fields: Trove's client sends 1; true and
// 0/false are taken too.
type logFlag bool

func (f *logFlag) UnmarshalJSON(b []byte) error {
	switch strings.TrimSpace(string(b)) {
	case "1", "true":
		*f = true
	case "0", "false", "null":
		*f = false
	default:
		return fmt.Errorf("want 1 or 0, got %s", trunc(string(b)))
	}
	return nil
}

// logAction is Trove's POST /instances/{id}/log: with only a name it
// shows the log; enable or disable switch a USER log; discard removes
// what was published; publish stores the log's content in the object
// store. They run in that order; the answer is the log's view after.
func (s *Server) logAction(w http.ResponseWriter, c *call) error {
	var req struct {
		Name    *string `json:"name"`
		Enable  logFlag `json:"enable"`
		Disable logFlag `json:"disable"`
		Publish logFlag `json:"publish"`
		Discard logFlag `json:"discard"`
	}
	if err := decode(c, &req); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && strings.Contains(ae.msg, "want 1 or 0") {
			ae.msg = "enable, disable, publish and discard take 1 (or 0): " + ae.msg
		}
		return err
	}
	if req.Name == nil {
		return errorf(http.StatusBadRequest, "name: the log's name is required")
	}
	name := *req.Name
	if !logNamePattern.MatchString(name) {
		return errorf(http.StatusBadRequest, "name %q: not a log name (lowercase letters, digits and _)", trunc(name))
	}
	if req.Enable && req.Disable {
		return errorf(http.StatusBadRequest, "enable and disable were both given; give one")
	}
	if (req.Publish || req.Discard) && s.GuestLogs == nil {
		return errorf(http.StatusNotImplemented, "this controller has no object store to publish logs to")
	}
	var list wire.ListLogsResult
	in, err := s.guestQuery(c, wire.KindListLogs, nil, &list)
	if err != nil {
		return err
	}
	var info *wire.LogInfo
	for i := range list.Logs {
		if list.Logs[i].Name == name {
			info = &list.Logs[i]
		}
	}
	if info == nil {
		var names []string
		for _, l := range list.Logs {
			names = append(names, l.Name)
		}
		return errorf(http.StatusNotFound, "instance %s has no log named %s (it has: %s)", in.ID, name, strings.Join(names, ", "))
	}
	if req.Enable || req.Disable {
		res, err := s.Lifecycle.Call(c.ctx(), in, wire.KindSetLog, wire.SetLogArgs{Name: name, Enable: bool(req.Enable)})
		if err != nil {
			return err
		}
		if res.Error != nil {
			return opError(res.Error)
		}
		if err := res.Decode(info); err != nil {
			return err
		}
	}
	if req.Discard {
		if err := s.GuestLogs.Discard(c.ctx(), in.ID, name); err != nil {
			return err
		}
	}
	if req.Publish {
		if _, err := s.GuestLogs.Publish(c.ctx(), in.ID, name); err != nil {
			var oe *wire.OpError
			if errors.As(err, &oe) {
				return opError(oe)
			}
			if errors.Is(err, guestlogs.ErrDamaged) {
				return errorf(http.StatusInternalServerError, "publishing log %s of instance %s: %v", name, in.ID, err)
			}
			if errors.Is(err, guestlogs.ErrGuestTimeout) {
				return errorf(http.StatusGatewayTimeout, "%s", strings.TrimPrefix(err.Error(), guestlogs.ErrGuestTimeout.Error()+": "))
			}
			return err
		}
		// The size now, for pending.
		if err := s.refreshLog(c, in, info); err != nil {
			return err
		}
	}
	meta, ok, err := s.published(c, in, name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"log": logView(c, in, *info, meta, ok)})
	return nil
}

func (s *Server) refreshLog(c *call, in instances.Instance, info *wire.LogInfo) error {
	res, err := s.Lifecycle.Call(c.ctx(), in, wire.KindListLogs, nil)
	if err != nil {
		return err
	}
	if res.Error != nil {
		return opError(res.Error)
	}
	var list wire.ListLogsResult
	if err := res.Decode(&list); err != nil {
		return err
	}
	for _, l := range list.Logs {
		if l.Name == info.Name {
			*info = l
		}
	}
	return nil
}

// logInstance checks the container and that the object or prefix names
// one of the caller's instances (its first segment), and returns the
// rest.
func (s *Server) logInstance(c *call, path string) (instances.Instance, error) {
	if c.r.PathValue("container") != guestlogs.Container {
		return instances.Instance{}, errorf(http.StatusNotFound, "no container %q (published logs are in %s)", trunc(c.r.PathValue("container")), guestlogs.Container)
	}
	id, _, ok := strings.Cut(path, "/")
	if !ok || id == "" {
		return instances.Instance{}, errorf(http.StatusBadRequest, "%q: name an instance's logs (<instance id>/...)", trunc(path))
	}
	if s.GuestLogs == nil {
		return instances.Instance{}, errorf(http.StatusNotFound, "this controller publishes no logs")
	}
	return instances.Get(c.ctx(), s.DB, c.instanceScope(), id)
}

// logContainer lists published parts as Swift lists a container (JSON).
func (s *Server) logContainer(w http.ResponseWriter, c *call) error {
	prefix := c.r.URL.Query().Get("prefix")
	if _, err := s.logInstance(c, prefix); err != nil {
		return err
	}
	if !objectstore.ValidPrefix(guestlogs.Key(prefix)) {
		return errorf(http.StatusBadRequest, "prefix %q is not a valid object name prefix", trunc(prefix))
	}
	objs, err := s.GuestLogs.Store.List(c.ctx(), guestlogs.Key(prefix))
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, o := range objs {
		out = append(out, map[string]any{
			"name": strings.TrimPrefix(o.Name, guestlogs.Root+"/"), "bytes": o.Size, "hash": o.ETag,
			"last_modified": o.Modified.UTC().Format("2006-01-02T15:04:05.000000"), "content_type": "text/plain",
		})
	}
	w.Header().Set("X-Container-Object-Count", strconv.Itoa(len(out)))
	writeJSON(w, http.StatusOK, out)
	return nil
}

// logObject answers GET and HEAD of one published object; HEAD carries
// X-Object-Meta-Lines, which the client's `log tail` reads.
func (s *Server) logObject(w http.ResponseWriter, c *call) error {
	object := c.r.PathValue("object")
	in, err := s.logInstance(c, object)
	if err != nil {
		return err
	}
	if !objectstore.ValidName(guestlogs.Key(object)) {
		return errorf(http.StatusBadRequest, "%q is not a valid object name", trunc(object))
	}
	st, err := s.GuestLogs.Store.Stat(c.ctx(), guestlogs.Key(object))
	if errors.Is(err, objectstore.ErrNotFound) {
		return errorf(http.StatusNotFound, "no published object %s", object)
	}
	if err != nil {
		return err
	}
	rc, err := s.GuestLogs.Store.Get(c.ctx(), guestlogs.Key(object))
	if errors.Is(err, objectstore.ErrNotFound) {
		return errorf(http.StatusNotFound, "no published object %s", object)
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.FormatInt(st.Size, 10))
	h.Set("Last-Modified", st.Modified.UTC().Format(http.TimeFormat))
	if st.ETag != "" {
		h.Set("ETag", st.ETag)
	}
	if c.r.Method == http.MethodHead {
		lines, err := s.objectLines(c, in, object, rc)
		if err != nil {
			return err
		}
		h.Set("X-Object-Meta-Lines", strconv.FormatInt(lines, 10))
		w.WriteHeader(http.StatusOK)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	_, err = io.Copy(w, rc)
	if err != nil {
		s.log().Warn("sending a published log was cut short", "object", object, "err", err)
	}
	return nil
}

// objectLines is a part's line count: the metafile's for the part it
// records, else counted.
func (s *Server) objectLines(c *call, in instances.Instance, object string, rc io.Reader) (int64, error) {
	rest := strings.TrimPrefix(object, in.ID+"/")
	if name, _, ok := strings.Cut(rest, "/"); ok {
		if meta, found, err := s.GuestLogs.Published(c.ctx(), in.ID, name); err != nil {
			return 0, err
		} else if found && meta.Object == object {
			return meta.Lines, nil
		}
	}
	var n int64
	r := bufio.NewReaderSize(rc, 64<<10)
	buf := make([]byte, 64<<10)
	var last byte
	for {
		k, err := r.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if k > 0 {
			last = buf[k-1]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if last != 0 && last != '\n' {
		n++
	}
	return n, nil
}
